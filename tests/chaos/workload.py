"""What the fault tests run: reactive automations with thresholds and ``for_each``,
a webhook receiver that counts deliveries, and a publisher that sends
acknowledged events and retries a batch until the daemon acknowledges it."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

from marmot.engine.errors import DaemonUnavailable
from marmot.transport.client import Client

PING = "chaos.ping"
PONG = "chaos.pong"
# The webhook body: which automation fired on which event. ``event`` in an
# automation's ``actions`` is the firing's triggering event.
WEBHOOK_PAYLOAD = '{"automation": "{{ automation.name }}", "event": "{{ event.id }}"}'


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request the webhook receiver got."""

    path: str
    body: bytes
    at: float
    # The Idempotency-Key header: the same for every attempt of one action.
    idempotency_key: str = ""

    def key(self) -> tuple[str, str]:
        """(automation name, triggering event id) from the templated body."""
        data = json.loads(self.body)
        return str(data["automation"]), str(data["event"])


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every request on arrival and
    answers 200 after ``delay_s`` (a slow receiver keeps deliveries in flight), or
    first the statuses scripted for a path with ``script`` (one request each)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.scripts: dict[str, list[int]] = {}
        self.deliveries: list[Delivery] = []
        # Requests received and not answered yet.
        self.in_flight = 0
        # Requests whose body did not arrive whole (not counted as deliveries).
        self.torn = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) < length:
                    # The sender died while sending: nothing was delivered.
                    with receiver._lock:
                        receiver.torn += 1
                    return
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(
                            self.path,
                            body,
                            time.monotonic(),
                            self.headers.get("Idempotency-Key") or "",
                        )
                    )
                    receiver.in_flight += 1
                try:
                    if receiver.delay_s:
                        time.sleep(receiver.delay_s)
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1
                with receiver._lock:
                    script = receiver.scripts.get(self.path)
                    status = script.pop(0) if script else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender died (a killed executor): the request counts

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def script(self, path: str, *statuses: int) -> None:
        """Answer the next requests on ``path`` with these statuses, once each."""
        with self._lock:
            self.scripts[path] = list(statuses)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def on(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.path == path]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def reactive(
    name: str,
    expect: Sequence[str],
    for_each: Sequence[str],
    threshold: int,
    within: int,
    actions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A reactive automation document (Prefect's JSON)."""
    return {
        "name": name,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": list(expect),
            "for_each": list(for_each),
            "threshold": threshold,
            "within": within,
        },
        "actions": actions or [{"type": "do-nothing"}],
    }


def webhook_action(client: Client, receiver: WebhookReceiver, path: str) -> dict[str, Any]:
    """A call-webhook action through a new webhook block pointing at ``receiver``."""
    block = client.create_block(
        {
            "block_type_slug": "webhook",
            "name": f"chaos-{uuid4().hex[:8]}",
            "data": {"url": receiver.url(path), "method": "POST", "allow_private_urls": True},
        }
    )
    return {
        "type": "call-webhook",
        "block_document_id": str(block.id),
        "payload": WEBHOOK_PAYLOAD,
    }


def standard_automations(client: Client, receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Three reactive automations whose firings depend on bucket state: a lost
    count shows as a missing or shifted firing. Two count every event at once
    (``within: 0``, so every threshold-th event fires); one counts in 2-second
    windows of ``occurred`` time (at most one firing per window and key)."""
    return [
        reactive("chaos-three-pings", [PING], ["prefect.resource.id"], 3, 0),
        reactive("chaos-five-per-group-2s", [PING, PONG], ["group"], 5, 2),
        reactive(
            "chaos-webhook-two-pongs",
            [PONG],
            ["prefect.resource.id"],
            2,
            0,
            [webhook_action(client, receiver, "/hook")],
        ),
    ]


def make_events(
    rng: random.Random, count: int, resources: int = 12, groups: int = 3
) -> list[dict[str, Any]]:
    """``count`` events with seeded ids, over ``resources`` resources in ``groups``
    groups; ``occurred`` is stamped when a batch is first sent."""
    events = []
    for n in range(count):
        r = rng.randrange(resources)
        events.append(
            {
                "id": str(UUID(int=rng.getrandbits(128), version=4)),
                "event": PING if rng.random() < 0.5 else PONG,
                "resource": {"prefect.resource.id": f"chaos.res.{r}", "group": f"g{r % groups}"},
                "payload": {"n": n},
            }
        )
    return events


class Publisher:
    """Sends events in batches with ``events.emit``, paced at ``rate_per_s``, from a
    thread; a batch whose reply does not come (the daemon died) is sent again,
    same ids, until acknowledged. Runs until every event is acknowledged or
    ``deadline_s`` passes."""

    def __init__(
        self,
        url: str,
        events: list[dict[str, Any]],
        *,
        batch: int = 20,
        rate_per_s: float = 150.0,
        timeout_s: float = 3.0,
        deadline_s: float = 150.0,
    ) -> None:
        self.url = url
        self.events = events
        self.batch = batch
        self.rate_per_s = rate_per_s
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.acknowledged = 0
        self.retries = 0
        self.seqs: list[int] = []
        # The longest time between two acknowledged batches: how long the
        # publisher saw the daemon unavailable.
        self.max_gap_s = 0.0
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._stop_asked = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-publisher", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the batch in hand and wait for the thread."""
        self._stop_asked.set()
        self._thread.join(self.timeout_s + 5)

    def join(self, timeout_s: float) -> None:
        """Wait for every event to be acknowledged; raise what went wrong."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"publisher still running after {timeout_s} s")
        if self.error is not None:
            raise AssertionError(f"publisher failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            self._publish()
        except BaseException as exc:  # handed to join()
            self.error = exc
        finally:
            self.finished.set()

    def _publish(self) -> None:
        deadline = time.monotonic() + self.deadline_s
        pause = self.batch / self.rate_per_s
        last_ack = time.monotonic()
        with Client(self.url, timeout_s=self.timeout_s) as client:
            for start in range(0, len(self.events), self.batch):
                now = datetime.now(UTC).isoformat()
                batch = [{**e, "occurred": now} for e in self.events[start : start + self.batch]]
                while True:
                    if self._stop_asked.is_set():
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"only {self.acknowledged} events acknowledged in time")
                    try:
                        self.seqs.extend(client.emit(batch))
                        break
                    except DaemonUnavailable:
                        self.retries += 1  # the reply was lost: send the same events again
                        time.sleep(0.05)
                self.acknowledged += len(batch)
                self.max_gap_s = max(self.max_gap_s, time.monotonic() - last_ack - pause)
                last_ack = time.monotonic()
                self._stop_asked.wait(pause)


def event(name: str, resource: str, **extra: Any) -> dict[str, Any]:
    """One event that occurred now."""
    return {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource},
        **extra,
    }


def eventually(predicate: Callable[[], object], timeout_s: float) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``timeout_s``."""
    if not eventually(predicate, timeout_s):
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
