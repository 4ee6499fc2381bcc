"""``/hooks/<slug>`` over real HTTP on 127.0.0.1: the daemon's HTTP app with a real
SQLite store; ``emit`` records what the service would be given. The daemon end to
end (log, automations) is tests/integration/test_webhooks.py."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from marmot.actors.metrics import Metrics
from marmot.actors.store import Store
from marmot.config import load_config
from marmot.engine.errors import DaemonUnavailable
from marmot.engine.models.events import Event, EventLimits
from marmot.engine.models.webhooks import WebhookSpec
from marmot.transport.http import build_app
from marmot.transport.webhooks import WebhookReceiver, WebhookSettings, hooks_url
from tests.integration.harness import free_port

TEMPLATE = (
    '{"event": "repo.{{ body.action }}",'
    ' "resource": {"prefect.resource.id": "repo.{{ body.repo }}"}}'
)
STATIC = '{"event": "cron.done", "resource": {"prefect.resource.id": "cron.nightly"}}'


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # not the main thread: no signal handlers


class Hooks:
    """The HTTP app on a free port in a thread, and what it emitted."""

    def __init__(self, store: Store, *, max_body_bytes: int = 10_000) -> None:
        self.store = store
        self.metrics = Metrics()
        self.emitted: list[Event] = []
        self.ready = True
        self.emit_error: Exception | None = None
        settings = WebhookSettings(
            limits=EventLimits(max_payload_bytes=4_096),
            max_body_bytes=max_body_bytes,
            template_max_bytes=65_536,
            template_timeout_s=2.0,
        )
        self.receiver = WebhookReceiver(
            store.webhooks, settings, self.metrics, emit=self._emit, is_ready=lambda: self.ready
        )
        app = build_app(self.metrics.registry, lambda: {"ok": True}, self.receiver)
        self.port = free_port()
        self.server = _Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _emit(self, events: Sequence[Event]) -> None:
        if self.emit_error is not None:
            raise self.emit_error
        self.emitted.extend(events)

    def url(self, slug: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{slug}"

    def count(self, webhook: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "marmot_webhook_requests_total", {"webhook": webhook, "outcome": outcome}
        )
        return value or 0.0

    def __enter__(self) -> Hooks:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            threading.Event().wait(0.01)
        raise AssertionError("the HTTP server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "marmot.db") as opened:
        yield opened


@pytest.fixture
def hooks(store: Store) -> Iterator[Hooks]:
    with Hooks(store) as running:
        yield running


def create(store: Store, name: str = "repo", template: str = TEMPLATE, **fields: Any) -> Any:
    return store.webhooks.create(
        WebhookSpec.model_validate({"name": name, "template": template, **fields})
    )


def test_a_json_post_makes_its_event_and_gets_204(hooks: Hooks, store: Store) -> None:
    webhook = create(store)
    reply = httpx.post(hooks.url(webhook.slug), json={"action": "pushed", "repo": "etl"})
    assert reply.status_code == 204 and reply.content == b""
    [event] = hooks.emitted
    assert (event.event, event.resource_id) == ("repo.pushed", "repo.etl")
    assert event.related[-1]["prefect.resource.id"] == f"marmot.webhook.{webhook.id}"
    assert event.received is not None and event.occurred == event.received
    assert hooks.count("repo", "accepted") == 1


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "POST", "PUT", "PATCH"])
def test_a_static_template_answers_every_prefect_method(
    hooks: Hooks, store: Store, method: str
) -> None:
    webhook = create(store, "cron", STATIC)
    assert httpx.request(method, hooks.url(webhook.slug)).status_code == 204
    assert [e.event for e in hooks.emitted] == ["cron.done"]
    assert hooks.emitted[0].payload["method"] == method


def test_other_methods_are_not_allowed(hooks: Hooks, store: Store) -> None:
    webhook = create(store, "cron", STATIC)
    assert httpx.request("OPTIONS", hooks.url(webhook.slug)).status_code == 405
    assert hooks.emitted == []


def test_a_form_post_is_read_as_fields(hooks: Hooks, store: Store) -> None:
    webhook = create(store)
    reply = httpx.post(hooks.url(webhook.slug), data={"action": "tagged", "repo": "web"})
    assert reply.status_code == 204
    assert hooks.emitted[0].resource_id == "repo.web"


def test_unknown_and_disabled_urls_answer_the_same_404(hooks: Hooks, store: Store) -> None:
    disabled = create(store, "off", STATIC, enabled=False)
    unknown = httpx.post(hooks.url("AERylZ_uewzpDx-8fcweHQ"), json={})
    off = httpx.post(hooks.url(disabled.slug), json={})
    assert unknown.status_code == off.status_code == 404
    assert unknown.content == off.content
    assert hooks.emitted == []
    assert hooks.count("", "not_found") == 1 and hooks.count("off", "disabled") == 1


def test_a_failing_template_gets_400_with_the_reason_and_a_failure_event(
    hooks: Hooks, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    webhook = create(store)
    body = '{"action": "say \\"hi\\"", "repo": "etl"}'
    with caplog.at_level(logging.WARNING, logger="marmot.transport.webhooks"):
        replies = [
            httpx.post(
                hooks.url(webhook.slug),
                content=body,
                headers={"content-type": "application/json", "authorization": "Bearer s"},
            )
            for _ in range(3)
        ]
    assert {r.status_code for r in replies} == {400}
    assert replies[0].text.startswith("the template's output is not JSON")
    failed = hooks.emitted
    assert [e.event for e in failed] == ["marmot.webhook.failed"] * 3
    assert failed[0].resource["prefect.resource.id"] == f"marmot.webhook.{webhook.id}"
    payload = failed[0].payload
    assert payload["error"] == replies[0].text
    assert payload["method"] == "POST" and payload["body"] == body
    assert payload["rendered"].startswith('{"event": "repo.say "hi""')
    assert "authorization" not in payload["headers"]
    assert hooks.count("repo", "failed") == 3
    # Counted every time, logged once per interval.
    refused = [r for r in caplog.records if "request refused" in r.getMessage()]
    assert len(refused) == 1


def test_a_body_over_the_limit_gets_413_and_a_failure_event(tmp_path: Path) -> None:
    with Store.open(tmp_path / "marmot.db") as store, Hooks(store, max_body_bytes=100) as hooks:
        webhook = create(store)
        reply = httpx.post(hooks.url(webhook.slug), content=b"x" * 101)
        assert reply.status_code == 413
        assert reply.text == "the request body is larger than 100 bytes"
        [failed] = hooks.emitted
        assert failed.event == "marmot.webhook.failed" and failed.payload["body"] == ""
        # Chunked, with no Content-Length: still cut off at the limit.
        chunks = iter([b"y" * 60, b"y" * 60])
        reply = httpx.post(hooks.url(webhook.slug), content=chunks)
        assert reply.status_code == 413
        assert httpx.post(hooks.url(webhook.slug), json={"action": "a", "repo": "b"}).is_success


def test_rotating_retires_the_old_url_at_once(hooks: Hooks, store: Store) -> None:
    webhook = create(store, "cron", STATIC)
    assert httpx.get(hooks.url(webhook.slug)).status_code == 204
    rotated = store.webhooks.rotate(webhook.id)
    assert httpx.get(hooks.url(webhook.slug)).status_code == 404
    assert httpx.get(hooks.url(rotated.slug)).status_code == 204


def test_changes_to_a_webhook_apply_to_the_next_request(hooks: Hooks, store: Store) -> None:
    webhook = create(store, "cron", STATIC)
    changed = WebhookSpec(name="cron", template=STATIC.replace("cron.done", "cron.finished"))
    store.webhooks.update(webhook.id, changed)
    assert httpx.get(hooks.url(webhook.slug)).status_code == 204
    store.webhooks.update(webhook.id, changed.model_copy(update={"enabled": False}))
    assert httpx.get(hooks.url(webhook.slug)).status_code == 404
    assert [e.event for e in hooks.emitted] == ["cron.finished"]


def test_a_starting_daemon_answers_503(hooks: Hooks, store: Store) -> None:
    webhook = create(store, "cron", STATIC)
    hooks.ready = False
    reply = httpx.get(hooks.url(webhook.slug))
    assert reply.status_code == 503 and reply.headers["retry-after"] == "5"
    assert hooks.emitted == []


def test_an_event_the_service_refuses_gets_503_and_a_broken_one_500(
    hooks: Hooks, store: Store
) -> None:
    webhook = create(store, "cron", STATIC)
    hooks.emit_error = DaemonUnavailable("stopping")
    assert httpx.get(hooks.url(webhook.slug)).status_code == 503
    hooks.emit_error = RuntimeError("broken")
    assert httpx.get(hooks.url(webhook.slug)).status_code == 500
    hooks.emit_error = None
    assert httpx.get(hooks.url(webhook.slug)).status_code == 204
    assert hooks.count("cron", "unavailable") == 1 and hooks.count("cron", "error") == 1


def test_health_and_metrics_are_still_served(hooks: Hooks) -> None:
    base = f"http://127.0.0.1:{hooks.port}"
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert "marmot_webhook_requests" in httpx.get(f"{base}/metrics").text


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "http://127.0.0.1:7602/hooks/"),
        ({"http.port": 8080, "http.host": "::1"}, "http://[::1]:8080/hooks/"),
        ({"http.public_url": "https://hooks.example.com/"}, "https://hooks.example.com/hooks/"),
        ({"http.public_url": "https://example.com/marmot"}, "https://example.com/marmot/hooks/"),
    ],
)
def test_webhook_urls_start_at_the_public_url_or_the_bound_address(
    overrides: dict[str, Any], expected: str
) -> None:
    assert hooks_url(load_config(env={}, overrides=overrides).http) == expected


def test_a_wildcard_host_shows_the_machines_name() -> None:
    http = load_config(env={}, overrides={"http.host": "0.0.0.0"}).http
    assert hooks_url(http) == f"http://{socket.gethostname()}:7602/hooks/"
