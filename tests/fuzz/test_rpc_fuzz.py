"""Fuzzing the RPC server: thousands of hostile requests against a daemon's real handlers.

Every request that carries a usable id gets exactly one structured reply (an
error has a code from the known set and a message, never ``internal``: bad
input is the caller's fault); every other frame is dropped and counted; and
the server keeps answering ``health`` afterwards.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from marmot.engine.errors import LimitExceeded, MarmotError, ValidationFailed
from marmot.transport.api import Api
from marmot.transport.client import Client
from marmot.transport.codec import pack_rpc, unpack_rpc
from marmot.transport.rpc import DEFAULT_MAX_REQUEST_BYTES
from marmot.transport.rpc_clients import RpcClient
from tests.fuzz.daemons import own_daemon
from tests.fuzz.frames import FrameMaker
from tests.integration.harness import DaemonThread, wait_for

pytestmark = pytest.mark.integration

REQUESTS = 4_000
WAVE = 100  # requests in flight at once: replies past ZeroMQ's queues would be dropped
# What a bad request may be told. `internal` is not among them: it says the
# daemon failed, and a request, however bad, must not make it fail.
ERROR_CODES = frozenset(
    {"validation_failed", "not_found", "conflict", "unauthorized", "limit_exceeded", "unsupported"}
)
# Parameter names the handlers know, to get past "extra fields not permitted".
# `path` is left out on purpose: admin.backup would write a file there.
PARAM_NAMES = (
    "id",
    "name",
    "automation",
    "events",
    "names",
    "resource_id",
    "since",
    "until",
    "limit",
    "offset",
    "after_seq",
    "by_seq",
    "descending",
    "name_prefix",
    "enabled",
    "tags",
    "block",
    "block_type_slug",
    "automation_id",
    "status",
    "page",
    "cursor",
)
# Each method's own parameters, to reach past the check for unknown ones;
# a method not listed gets names from PARAM_NAMES.
METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "automations.read": ("id",),
    "automations.read_by_name": ("name",),
    "automations.filter": ("name_prefix", "enabled", "tags", "limit", "offset"),
    "automations.summaries": ("name_prefix", "enabled", "tags", "limit", "offset"),
    "automations.delete": ("id",),
    "automations.pause": ("id",),
    "automations.resume": ("id",),
    "automations.explain": ("id",),
    "events.filter": (
        "names",
        "resource_id",
        "since",
        "until",
        "limit",
        "descending",
        "by_seq",
        "after_seq",
        "page",
        "cursor",
    ),
    "blocks.read": ("id",),
    "blocks.read_by_name": ("block_type_slug", "name"),
    "blocks.filter": ("block_type_slug",),
    "blocks.delete": ("id",),
    "incidents.read": ("id",),
    "incidents.resolve": ("id",),
    "incidents.filter": ("automation_id", "status", "limit"),
    "admin.backup": (),  # never a path: it would write a file there
}
VALID_AUTOMATION: dict[str, Any] = {
    "name": "fuzzed",
    "trigger": {
        "type": "event",
        "posture": "Reactive",
        "expect": ["fuzz.rpc"],
        "threshold": 1,
        "within": 0,
    },
    "actions": [{"type": "do-nothing"}],
}


@dataclass(frozen=True, slots=True)
class Request:
    """Frames to send after the socket's identity, and the id a reply must carry."""

    kind: str
    parts: tuple[bytes, ...]
    reply_id: str | int | None  # None: the server must drop it


def usable_id(body: bytes) -> str | int | None:
    """The id a reply to ``body`` echoes, or None when the server cannot answer it."""
    try:
        request = unpack_rpc(body)
    except ValidationFailed:
        return None
    if not isinstance(request, dict):
        return None
    request_id = request.get("id")
    if isinstance(request_id, str | int) and not isinstance(request_id, bool):
        return request_id
    return None


class RequestMaker:
    """Hostile requests from a seed; every answerable one gets a unique id."""

    def __init__(self, seed: int, methods: list[str]) -> None:
        self.rng = random.Random(seed)
        self.methods = methods
        self.frames = FrameMaker(seed)
        self.serial = 0

    def next_id(self) -> str | int:
        self.serial += 1
        if self.rng.random() < 0.2:
            return self.serial  # integer ids are echoed too
        return f"fuzz-{self.serial}-" + self.frames.text(0, 8)

    def hostile(self, depth: int = 0) -> Any:
        rng = self.rng
        options: list[Callable[[], Any]] = [
            lambda: None,
            lambda: rng.choice([True, False]),
            lambda: rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, 10_001]),
            lambda: rng.choice([math.nan, math.inf, -math.inf, 1.5, -0.0]),
            lambda: self.frames.text(),
            lambda: rng.choice(
                ["", "x" * 70_000, "\x00", "é" * 300, "prefect.flow-run.*", "12.1700000000000000"]
            ),
            lambda: str(UUID(int=rng.getrandbits(128))),
            lambda: rng.randbytes(rng.randint(0, 12)),
            lambda: datetime(rng.choice([1, 1970, 2026, 9999]), 1, 1, tzinfo=UTC),
            lambda: msgpack.ExtType(rng.randrange(128), rng.randbytes(4)),
            lambda: [self.hostile(depth + 1) for _ in range(rng.randint(0, 3))],
            lambda: {self.frames.text(): self.hostile(depth + 1) for _ in range(rng.randint(0, 3))},
            lambda: _nested(rng.randint(10, 500)),
        ]
        if depth > 2:
            options = options[:10]
        return rng.choice(options)()

    def hostile_params(self) -> dict[str, Any]:
        names = self.rng.sample(PARAM_NAMES, self.rng.randint(0, 3))
        return {name: self.hostile() for name in names}

    def typed_params(self, method: str) -> dict[str, Any]:
        """The method's own parameters, each with a hostile value or none at all."""
        names = METHOD_PARAMS.get(method, PARAM_NAMES)
        return {name: self.hostile() for name in names if self.rng.random() < 0.7}

    def hostile_automation(self) -> dict[str, Any]:
        """A near-valid automation, one part of it made wrong (so it is never created)."""
        rng = self.rng
        doc: dict[str, Any] = {**VALID_AUTOMATION, "trigger": dict(VALID_AUTOMATION["trigger"])}
        # An unknown field too, so that no mix of the others creates an automation.
        doc["fuzz_unknown_field"] = True
        where = rng.choice(["name", "trigger", "actions", "within", "threshold", "type", "deep"])
        if where == "within":
            doc["trigger"]["within"] = rng.choice([-1, "PT-5S", "soon", 1e300, 2**63, math.nan])
        elif where == "threshold":
            doc["trigger"]["threshold"] = rng.choice([-1, 2**64 - 1, "many", math.inf])
        elif where == "type":
            doc["trigger"]["type"] = rng.choice(["", "events", None, 1])
        elif where == "deep":
            trigger: Any = doc["trigger"]
            for _ in range(rng.choice([10, 100, 300])):
                trigger = {"type": rng.choice(["compound", "sequence"]), "triggers": [trigger]}
            doc["trigger"] = trigger
        else:
            doc[where] = self.hostile()
        return doc

    def hostile_events(self) -> list[Any]:
        rng = self.rng
        events: list[Any] = []
        for _ in range(rng.randint(1, 5)):
            doc: dict[str, Any] = self.frames.good_doc(name="fuzz.rpc.emitted")
            choice = rng.randrange(7)
            if choice == 0:
                doc["payload"] = {"deep": _nested(rng.choice([101, 300, 500]))}
            elif choice == 1:
                doc["payload"] = {"blob": rng.randbytes(8)}
            elif choice == 2:
                doc["payload"] = {"ext": msgpack.ExtType(7, rng.randbytes(3))}
            elif choice == 3:
                doc["payload"] = {"big": "p" * 300_000}
            elif choice == 4:
                doc[rng.choice(list(doc))] = self.hostile()
            elif choice == 5:
                events.append(self.hostile())
                continue
            events.append(doc)  # choice 6: a good event, which is logged
        return events

    def body(self) -> tuple[str, bytes]:
        """One request body, of a kind drawn with fixed weights."""
        rng = self.rng
        kind = rng.choices(
            ["garbage", "not-a-map", "no-id", "bad-method", "unknown-method", "bad-params",
             "hostile-params", "typed-params", "create", "emit", "huge"],
            [8, 5, 8, 6, 8, 6, 10, 25, 10, 14, 1],
        )[0]  # fmt: skip
        request: dict[str, Any] = {"id": self.next_id(), "method": rng.choice(self.methods)}
        if kind == "garbage":
            return kind, rng.choice([b"", b"\xc1", b"\x81", b"\xde\xff\xff"]) + rng.randbytes(
                rng.randint(0, 300)
            )
        if kind == "not-a-map":
            return kind, pack_rpc(self.hostile() if rng.random() < 0.7 else [request])
        if kind == "no-id":
            request["id"] = rng.choice([None, True, 1.5, [1], {"id": 1}, b"id", math.nan])
            if rng.random() < 0.3:
                del request["id"]
        elif kind == "bad-method":
            request["method"] = rng.choice([None, 7, ["health"], b"health", {"m": 1}, True])
            if rng.random() < 0.3:
                del request["method"]
        elif kind == "unknown-method":
            request["method"] = rng.choice(
                ["", "health ", "HEALTH", "automations", "automations.", ".create", "x" * 10_000,
                 "automations.create.x", "__init__", "handlers", "évènements.émettre"]
            )  # fmt: skip
        elif kind == "bad-params":
            request["params"] = rng.choice([[], "params", 1, True, b"\x00", [{"id": 1}], math.nan])
        elif kind == "hostile-params":
            request["params"] = self.hostile_params()
        elif kind == "typed-params":
            request["params"] = self.typed_params(request["method"])
        elif kind == "create":
            request["method"] = rng.choice(["automations.create", "automations.update"])
            request["params"] = {"automation": self.hostile_automation()}
            if request["method"] == "automations.update":
                request["params"]["id"] = str(UUID(int=rng.getrandbits(128)))
        elif kind == "emit":
            request["method"] = "events.emit"
            request["params"] = {"events": self.hostile_events()}
        else:
            request["params"] = {"names": ["n" * 1_000_000, "m" * 1_000_000]}
        if rng.random() < 0.05:
            request["token"] = self.hostile()
        return kind, pack_rpc(request)

    def request(self) -> Request:
        kind, body = self.body()
        parts: tuple[bytes, ...] = (body,)
        if self.rng.random() < 0.1:
            # Junk frames before the body: an envelope the reply must carry back.
            junk = tuple(self.rng.randbytes(self.rng.randint(0, 20)) for _ in range(3))
            parts = junk[: self.rng.randint(1, 3)] + parts
            kind += "+envelope"
        return Request(kind, parts, usable_id(body))


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"n": value}
    return value


# ---------------------------------------------------------------- the daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    """A daemon of this module's own."""
    with own_daemon(tmp_path_factory.mktemp("rpc-fuzz"), "rpc-fuzz") as running:
        yield running


def methods_of(daemon: DaemonThread) -> list[str]:
    service = daemon.daemon.service
    assert service is not None
    return sorted(Api(service, daemon.daemon.limits, lambda: datetime.now(UTC)).handlers())


def exchange(socket: zmq.Socket[bytes], wave: list[Request]) -> dict[str | int, list[Any]]:
    """Send a wave of requests and collect the replies to the answerable ones."""
    for request in wave:
        socket.send_multipart(list(request.parts))
    waiting = Counter(r.reply_id for r in wave if r.reply_id is not None)
    replies: dict[str | int, list[Any]] = {}
    deadline = time.monotonic() + 60
    while sum(waiting.values()) > 0:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        assert remaining_ms > 0 and socket.poll(remaining_ms), f"no reply for {+waiting}"
        parts = socket.recv_multipart()
        reply = unpack_rpc(parts[-1])
        replies.setdefault(reply["id"], []).append((parts[:-1], reply))
        waiting[reply["id"]] -= 1
    return replies


def check_reply(request: Request, replies: list[Any]) -> str:
    """The reply's error code (or "ok"), after checking its shape."""
    assert len(replies) == 1, (request.kind, replies)
    [(envelope, reply)] = replies
    assert tuple(envelope) == request.parts[:-1], request.kind
    assert set(reply) == ({"id", "ok", "result"} if reply["ok"] else {"id", "ok", "error"})
    if reply["ok"] is True:
        return "ok"
    assert reply["ok"] is False
    error = reply["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] in ERROR_CODES, (request.kind, error)
    assert isinstance(error["message"], str) and error["message"], error
    code: str = error["code"]
    return code


def test_every_hostile_request_gets_a_structured_answer_or_is_dropped(
    daemon: DaemonThread,
) -> None:
    server = daemon.daemon.rpc
    assert server is not None
    maker = RequestMaker(seed=61, methods=methods_of(daemon))
    requests = [maker.request() for _ in range(REQUESTS)]
    dropped = sum(1 for r in requests if r.reply_id is None)
    assert 300 < dropped < REQUESTS - 2_000
    before = (server.stats.requests, server.stats.dropped)
    outcomes: Counter[str] = Counter()
    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(daemon.rpc_url)
    try:
        for start in range(0, len(requests), WAVE):
            wave = requests[start : start + WAVE]
            replies = exchange(socket, wave)
            for request in wave:
                if request.reply_id is not None:
                    outcomes[check_reply(request, replies[request.reply_id])] += 1
    finally:
        socket.close()
    # Frames without a usable id are dropped, and counted.
    wait_for(
        lambda: server.stats.dropped - before[1] == dropped,
        30,
        f"{dropped} dropped frames to be counted",
    )
    assert server.stats.requests - before[0] == REQUESTS
    assert {"ok", "validation_failed", "not_found"} <= set(outcomes), outcomes
    with Client(daemon.rpc_url, timeout_s=10) as client:
        assert client.health()["ok"] is True


def test_a_frame_over_the_request_limit_is_refused_unread_and_the_server_keeps_serving(
    daemon: DaemonThread,
) -> None:
    server = daemon.daemon.rpc
    assert server is not None
    requests_before = server.stats.requests
    padding = "x" * DEFAULT_MAX_REQUEST_BYTES
    too_big = pack_rpc({"id": "big", "method": "health", "params": {"x": padding}})
    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    socket.connect(daemon.rpc_url)
    try:
        socket.send(too_big)
        # ZeroMQ hangs up on a peer as soon as a frame's header is over the limit.
        assert monitor.poll(20_000), "the server did not hang up"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
    finally:
        socket.disable_monitor()
        monitor.close()
        socket.close()
    with Client(daemon.rpc_url, timeout_s=10) as client:
        assert client.health()["ok"] is True
    assert server.stats.requests - requests_before == 1  # the health call only
    with RpcClient(daemon.rpc_url, timeout_s=10) as rpc, pytest.raises(LimitExceeded) as refused:
        rpc.call("events.filter", {"names": [padding]})
    assert "over the limit" in refused.value.message


# ---------------------------------------------------------------- edge cases


def _emitted(payload: Any) -> dict[str, Any]:
    return {
        "events": [
            {
                "occurred": datetime.now(UTC).isoformat(),
                "event": "fuzz.rpc.edge",
                "resource": {"prefect.resource.id": "fuzz.rpc"},
                "payload": payload,
            }
        ]
    }


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("events.emit", _emitted({"deep": _nested(150)}), "validation_failed"),
        ("events.emit", _emitted({"deep": _nested(400)}), "validation_failed"),
        ("events.emit", _emitted({"blob": b"\xff\xfe"}), "validation_failed"),
        ("events.emit", _emitted({"big": "p" * 300_000}), "validation_failed"),
        ("events.emit", {"events": [{}] * 10_001}, "validation_failed"),
        ("automations.read_by_name", {"name": "x" * 1_000_000}, "not_found"),
        (
            "events.filter",
            {"since": datetime(1, 1, 1, tzinfo=UTC), "until": datetime(9999, 12, 31, tzinfo=UTC)},
            "ok",
        ),
        ("automations.filter", {"limit": 2**63 - 1, "offset": 2**63 - 1}, "ok"),
        pytest.param(
            "automations.filter",
            {"limit": 2**63},
            "validation_failed",
        ),
        pytest.param(
            "automations.filter",
            {"offset": 2**64 - 1},
            "validation_failed",
        ),
        pytest.param(
            "events.filter",
            {"after_seq": 2**63},
            "validation_failed",
        ),
        pytest.param(
            "events.filter",
            {"names": ["n"] * 100_000},
            "validation_failed",
        ),
    ],
)
def test_edge_case_requests_get_the_callers_error_not_an_internal_one(
    daemon: DaemonThread, method: str, params: dict[str, Any], code: str
) -> None:
    with RpcClient(daemon.rpc_url, timeout_s=30) as rpc:
        if code == "ok":
            rpc.call(method, params)
        else:
            with pytest.raises(MarmotError) as refused:
                rpc.call(method, params)
            assert refused.value.code == code, refused.value.message
        # The event log still reads whole: nothing unreadable went in.
        assert isinstance(rpc.call("events.filter", {"limit": 10_000}), list)


DEEP_TRIGGER = (
    "engine/models/triggers.py: a compound/sequence tree ~99 deep validates and is stored, "
    "but pydantic's JSON parser refuses it when it is read back: every automations.filter "
    "fails and the daemon cannot restart; the trigger models need a depth limit"
)


def test_an_automation_too_deep_to_read_back_is_refused(daemon: DaemonThread) -> None:
    trigger: dict[str, Any] = {"type": "event", "expect": ["fuzz.deep"], "threshold": 1}
    for _ in range(100):
        trigger = {"type": "compound", "triggers": [trigger]}
    automation_id = str(UUID(int=100))
    document = {"id": automation_id, "name": "fuzz too deep", "trigger": trigger}
    with RpcClient(daemon.rpc_url, timeout_s=30) as rpc:
        try:
            with pytest.raises(ValidationFailed):
                rpc.call("automations.create", {"automation": document})
            assert isinstance(rpc.call("automations.filter", {}), list)
        finally:
            with contextlib.suppress(MarmotError):
                rpc.call("automations.delete", {"id": automation_id})
