"""Publisher: an event goes out at once, bursts go in few frames, nothing is held."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import msgpack
import pytest
import zmq

from marmot.transport.publisher import Publisher


@pytest.fixture
def pull() -> Iterator[tuple[zmq.Socket[bytes], str]]:
    socket = zmq.Context.instance().socket(zmq.PULL)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind("tcp://127.0.0.1:*")
    endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
    yield socket, endpoint
    socket.close()


def _doc(n: int) -> dict[str, object]:
    return {"event": f"test.pub.{n}", "resource": {"prefect.resource.id": "r"}}


def _events(frame: bytes) -> list[dict[str, object]]:
    value = msgpack.unpackb(frame, timestamp=3)
    return value if isinstance(value, list) else [value]


def test_a_lone_event_is_sent_at_once_without_a_flush(
    pull: tuple[zmq.Socket[bytes], str],
) -> None:
    socket, endpoint = pull
    with Publisher(endpoint) as publisher:
        publisher.publish(_doc(1))
        # No flush, no close: the event must already be on its way.
        assert socket.poll(5000, zmq.POLLIN), "the event was held back"
        [event] = _events(socket.recv())
        assert event["event"] == "test.pub.1"
        publisher.publish(_doc(2))
        assert socket.poll(5000, zmq.POLLIN)
        assert [e["event"] for e in _events(socket.recv())] == ["test.pub.2"]


def test_a_burst_goes_in_few_frames_and_close_delivers_everything(
    pull: tuple[zmq.Socket[bytes], str],
) -> None:
    socket, endpoint = pull
    with Publisher(endpoint, batch_size=50) as publisher:
        for n in range(500):
            publisher.publish(_doc(n))
    names: list[object] = []
    frames = 0
    while socket.poll(1000, zmq.POLLIN):
        frame = _events(socket.recv())
        assert len(frame) <= 50
        names.extend(e["event"] for e in frame)
        frames += 1
    assert names == [f"test.pub.{n}" for n in range(500)]
    assert frames < 500  # batched while the sender was busy


def test_missing_id_and_occurred_are_filled_in(pull: tuple[zmq.Socket[bytes], str]) -> None:
    socket, endpoint = pull
    before = datetime.now(UTC)
    with Publisher(endpoint) as publisher:
        publisher.publish(_doc(1))
    [event] = _events(socket.recv())
    assert event["id"]
    occurred = event["occurred"]
    assert isinstance(occurred, datetime) and occurred >= before
