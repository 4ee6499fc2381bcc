"""Fuzzing incoming webhooks: hostile HTTP requests against a real daemon.

Random methods, slugs, headers, content types and bodies (binary garbage,
broken UTF-8, deep or huge JSON, malformed forms and multipart, bodies over
the limit) go to three webhooks. Every request gets a deliberate answer,
never a server error; each 204 is exactly one event in the durable log and
each refused request on a live webhook exactly one ``marmot.webhook.failed``
event; and the daemon still serves afterwards.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from marmot.transport.client import Client
from tests.fuzz.daemons import own_daemon
from tests.integration.harness import DaemonThread

pytestmark = pytest.mark.integration

REQUESTS = 1_500
SEED = 7611
MAX_BODY = 1_048_576  # http.max_body_bytes, the default
ANSWERS = frozenset({204, 400, 404, 405, 413})
FAILED = "marmot.webhook.failed"

TEMPLATES = {
    "fuzz-static": '{"event": "fuzz.static", "resource": {"prefect.resource.id": "fuzz.static"}}',
    "fuzz-dynamic": (
        '{"event": "fuzz.{{ body.kind | default(\'none\') }}", '
        '"resource": {"prefect.resource.id": "fuzz.{{ headers[\'x-id\'] | default(\'0\') }}"}, '
        '"payload": {"got": {{ body | tojson }}}}'
    ),
    "fuzz-passthrough": "{{ body | tojson }}",
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    with own_daemon(tmp_path_factory.mktemp("webhook-fuzz"), "webhook-fuzz") as running:
        yield running


def _junk(rng: random.Random, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size))


def _body(rng: random.Random) -> tuple[str | None, bytes]:
    """A content type (None: no header) and a body, mostly hostile."""
    roll = rng.random()
    kind = rng.choice(["event", "kind", "junk", "deep", "huge", "form", "multipart", "text"])
    if kind == "event":
        event = {
            "event": rng.choice(["fuzz.ok", "", "x" * 2000, "fuzz.\u0000", 7]),
            "resource": rng.choice(
                [{"prefect.resource.id": "fuzz.r"}, {}, [], {"prefect.resource.id": ""}]
            ),
            "occurred": rng.choice(["2026-12-06T00:00:00Z", "yesterday", 12, None]),
        }
        return "application/json", json.dumps(event).encode()
    if kind == "kind":
        value = rng.choice(["deploy", "a b", "ä", "{{ 7*7 }}", "x" * 600, "", "\ud800"])
        data = json.dumps({"kind": value}, ensure_ascii=rng.random() < 0.5)
        return rng.choice(["application/json", "application/json; charset=latin-1", None]), (
            data.encode("utf-8", "surrogatepass")
        )
    if kind == "junk":
        return rng.choice(["application/json", "application/octet-stream", None, "x/y"]), _junk(
            rng, rng.randint(0, 2000)
        )
    if kind == "deep":
        depth = rng.choice([50, 1000, 20000])
        return "application/json", b"[" * depth + b"]" * depth
    if kind == "huge":
        size = MAX_BODY + rng.randint(1, 4096) if roll < 0.5 else MAX_BODY - 10
        return "application/json", b'{"kind": "' + b"z" * (size - 12) + b'"}'
    if kind == "form":
        pairs = [
            (_junk(rng, 4).hex(), rng.choice(["a", "%zz", "&&", "=", "\u00e9"])) for _ in range(5)
        ]
        body = "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8")
        return "application/x-www-form-urlencoded", body
    if kind == "multipart":
        boundary = rng.choice(["b0undary", "", "--", "x" * 100])
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=kind\r\n\r\nmulti\r\n"
            f"--{boundary}--\r\n"
        ).encode()
        if roll < 0.5:
            body = body[: rng.randint(0, len(body))]
        return f"multipart/form-data; boundary={boundary}", body
    return rng.choice(["text/plain", "text/plain; charset=utf-16", None]), _junk(rng, 64)


def test_hostile_requests_get_deliberate_answers_and_exact_events(daemon: DaemonThread) -> None:
    rng = random.Random(SEED)
    with Client(daemon.rpc_url, timeout_s=30) as client:
        hooks = {
            name: client.create_webhook(name, template) for name, template in TEMPLATES.items()
        }
        disabled = client.create_webhook("fuzz-disabled", TEMPLATES["fuzz-static"], enabled=False)
    base = f"http://127.0.0.1:{daemon.config.http.port}/hooks/"
    slugs = [str(h["slug"]) for h in hooks.values()]
    dead = [str(disabled["slug"]), "nope", "..%2Fhealthz", "%2e%2e", "a" * 300]
    answers: Counter[int] = Counter()
    accepted: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    slug_names = {str(h["slug"]): name for name, h in hooks.items()}
    with httpx.Client(timeout=30) as http:
        for _ in range(REQUESTS):
            slug = rng.choice(slugs) if rng.random() < 0.85 else rng.choice(dead)
            method = rng.choice(["GET", "HEAD", "DELETE", "POST", "PUT", "PATCH", "OPTIONS"])
            content_type, body = _body(rng)
            headers: dict[str, Any] = {"x-id": rng.choice(["1", "two", "", "ä".encode().hex()])}
            if content_type is not None:
                headers["content-type"] = content_type
            if rng.random() < 0.1:
                headers["authorization"] = "Bearer secret"
            reply = http.request(method, base + slug, headers=headers, content=body)
            answers[reply.status_code] += 1
            assert reply.status_code in ANSWERS, (reply.status_code, reply.text[:200])
            name = slug_names.get(slug)
            if name is None:
                assert reply.status_code in (404, 405), reply.status_code
            elif reply.status_code == 204:
                accepted[name] += 1
            elif reply.status_code in (400, 413):
                refused[name] += 1
    print(f"\n[fuzz: webhooks] answers={dict(answers)} accepted={dict(accepted)}")
    assert answers[204] > 100 and answers[400] > 100, answers  # both paths were exercised

    with Client(daemon.rpc_url, timeout_s=30) as client:
        assert client.health()["ok"] is True
        logged = client.filter_events(limit=10_000, after_seq=0)
        by_webhook: Counter[tuple[str, str]] = Counter()
        ids = {str(h["id"]): name for name, h in hooks.items()}
        for event in logged:
            webhook_ids = [
                r["prefect.resource.id"].removeprefix("marmot.webhook.")
                for r in [event["resource"], *event.get("related", [])]
                if r.get("prefect.resource.id", "").startswith("marmot.webhook.")
            ]
            for webhook_id in set(webhook_ids) & set(ids):
                kind = "failed" if event["event"] == FAILED else "accepted"
                by_webhook[(ids[webhook_id], kind)] += 1
        # Exactly one event per 204, one failure report per refusal, per webhook.
        for name in TEMPLATES:
            assert by_webhook[(name, "accepted")] == accepted[name], (name, by_webhook)
            assert by_webhook[(name, "failed")] == refused[name], (name, by_webhook)
