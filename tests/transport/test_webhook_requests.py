"""Webhook requests and templates, without a server: how a request is seen (parsed by
``transport.webhook_requests``), what event its template makes (the engine's
``templates.webhooks``), and why it fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from marmot.engine.models.events import EventLimits
from marmot.engine.models.webhooks import WEBHOOK_FAILED, WebhookIdentity, WebhookSpec
from marmot.engine.templates.checks import validated_webhook
from marmot.engine.templates.webhooks import (
    WebhookFailed,
    WebhookLimits,
    WebhookRequest,
    check_webhook_template,
    render_webhook_event,
    webhook_failed_event,
)
from marmot.transport.webhook_requests import RequestHeaders, parse_body, webhook_request

RECEIVED = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
HOOK = WebhookIdentity(UUID("6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"), "github")
HOOK_RESOURCE = f"marmot.webhook.{HOOK.id}"
LIMITS = WebhookLimits(EventLimits(max_payload_bytes=262_144), 65_536, 2.0)


class FakeClock:
    """Monotonic seconds that move ``step`` every time they are read."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def request(
    method: str = "POST",
    body: bytes = b"",
    content_type: str | None = None,
    **headers: str,
) -> WebhookRequest:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    if content_type is not None:
        pairs.append(("content-type", content_type))
    return webhook_request(method, pairs, body)


def make(template: str, req: WebhookRequest, limits: WebhookLimits = LIMITS) -> Any:
    return render_webhook_event(
        template, req, HOOK, received=RECEIVED, limits=limits, clock=FakeClock()
    )


def failure(template: str, req: WebhookRequest, limits: WebhookLimits = LIMITS) -> WebhookFailed:
    with pytest.raises(WebhookFailed) as caught:
        make(template, req, limits)
    return caught.value


STATIC = json.dumps(
    {
        "event": "model.refreshed",
        "resource": {
            "prefect.resource.id": "product.models.recommendations",
            "prefect.resource.name": "Recommendations [Products]",
            "producing-team": "Data Science",
        },
    }
)


# -- static templates and the fields Marmot fills in ------------------------------------


def test_a_static_template_makes_its_event_from_a_get_without_a_body() -> None:
    event = make(STATIC, request("get"))
    assert event.event == "model.refreshed"
    assert event.resource["producing-team"] == "Data Science"
    assert event.occurred == RECEIVED and event.received == RECEIVED


def test_the_webhook_is_added_as_a_related_resource() -> None:
    template = (
        '{"event": "e", "resource": {"prefect.resource.id": "r"},'
        ' "related": [{"prefect.resource.id": "x", "prefect.resource.role": "other"}]}'
    )
    event = make(template, request())
    assert event.related == [
        {"prefect.resource.id": "x", "prefect.resource.role": "other"},
        {
            "prefect.resource.id": HOOK_RESOURCE,
            "prefect.resource.name": "github",
            "prefect.resource.role": "webhook",
        },
    ]


def test_without_a_payload_the_event_carries_the_request_for_debugging() -> None:
    req = request("put", b'{"a": 1}', "application/json", x_source="cron")
    event = make(STATIC, req)
    assert event.payload == {
        "method": "PUT",
        "headers": {"x-source": "cron", "content-type": "application/json"},
        "body": {"a": 1},
    }


def test_a_payload_id_and_occurred_from_the_template_are_kept() -> None:
    template = (
        '{"event": "e", "resource": {"prefect.resource.id": "r"}, "payload": {"k": "v"},'
        ' "id": "11111111-2222-4333-8444-555555555555", "occurred": "2026-01-02T03:04:05Z"}'
    )
    event = make(template, request())
    assert event.payload == {"k": "v"}
    assert str(event.id) == "11111111-2222-4333-8444-555555555555"
    assert event.occurred == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event.received == RECEIVED


def test_each_request_gets_a_new_event_id() -> None:
    assert make(STATIC, request()).id != make(STATIC, request()).id


# -- dynamic templates: body, headers, method -------------------------------------------


def test_a_json_body_is_parsed_for_the_template() -> None:
    template = (
        '{"event": "github.{{ headers["X-GitHub-Event"] }}",'
        ' "resource": {"prefect.resource.id": "github.repo.{{ body.repository.full_name }}"},'
        ' "payload": {"commits": {{ body.commits | length }}, "method": "{{ method }}"}}'
    )
    body = json.dumps({"repository": {"full_name": "acme/etl"}, "commits": [{}, {}]}).encode()
    event = make(template, request("post", body, "application/json", x_github_event="push"))
    assert event.event == "github.push"
    assert event.resource_id == "github.repo.acme/etl"
    assert event.payload == {"commits": 2, "method": "POST"}


def test_a_form_body_is_a_flat_mapping_read_by_key_or_attribute() -> None:
    template = (
        '{"event": "model.refreshed", "resource": {'
        '"prefect.resource.id": "product.models.{{ body.model }}",'
        ' "prefect.resource.name": "{{ body[\'friendly_name\'] }}"}}'
    )
    body = b"model=recommendations&friendly_name=Recommendations%20%5BProducts%5D"
    event = make(template, request("post", body, "application/x-www-form-urlencoded"))
    assert event.resource == {
        "prefect.resource.id": "product.models.recommendations",
        "prefect.resource.name": "Recommendations [Products]",
    }


def test_a_missing_value_falls_back_with_jinjas_default_filter() -> None:
    template = (
        '{"event": "e", "resource": {"prefect.resource.id": "m.{{ body.model }}",'
        ' "prefect.resource.name": "{{ body.friendly_name | default(body.model) }}"}}'
    )
    event = make(template, request("post", b"model=recs", "application/x-www-form-urlencoded"))
    assert event.resource["prefect.resource.name"] == "recs"


def test_a_body_that_is_not_json_is_its_text() -> None:
    template = '{"event": "log.line", "resource": {"prefect.resource.id": "{{ body }}"}}'
    assert make(template, request("post", b"plain-words", "text/plain")).resource_id == (
        "plain-words"
    )


def test_the_pass_through_template_accepts_a_partial_prefect_event() -> None:
    body = json.dumps(
        {"event": "model.refreshed", "resource": {"prefect.resource.id": "m.<recs>"}}
    ).encode()
    event = make("{{ body | tojson }}", request("post", body, "application/json"))
    assert event.event == "model.refreshed"
    assert event.resource_id == "m.<recs>"  # tojson's HTML-safe escapes decode back


def test_headers_are_read_in_any_case_and_authorization_is_hidden() -> None:
    template = (
        '{"event": "e", "resource": {"prefect.resource.id": "{{ headers[\'CoNtEnT-TyPe\'] }}",'
        " \"auth\": \"{{ headers.authorization | default('') }}|{{ 'Authorization' in headers }}\","
        ' "tags": "{{ headers[\'x-tag\'] }}"}}'
    )
    req = webhook_request(
        "POST",
        [
            ("Content-Type", "text/plain"),
            ("Authorization", "Bearer secret"),
            ("X-Tag", "a"),
            ("x-tag", "b"),
        ],
        b"",
    )
    event = make(template, req)
    assert event.resource["prefect.resource.id"] == "text/plain"
    assert event.resource["auth"] == "|False"
    assert event.resource["tags"] == "a, b"
    assert "authorization" not in event.payload["headers"]


def test_request_headers_answer_get_and_in_in_any_case() -> None:
    headers = RequestHeaders.of([("X-Request-Id", "42"), ("Proxy-Authorization", "Basic x")])
    assert headers["x-request-id"] == headers["X-REQUEST-ID"] == "42"
    assert headers.get("X-Request-ID") == "42" and headers.get("nope", "d") == "d"
    assert "X-Request-Id" in headers and "proxy-authorization" not in headers


@pytest.mark.parametrize(
    ("body", "content_type", "parsed"),
    [
        (b'{"a": [1, 2]}', "application/json", {"a": [1, 2]}),
        (b'{"a": 1}', "application/vnd.github+json; charset=utf-8", {"a": 1}),
        (b"[1, 2]", "text/plain", [1, 2]),
        (b"[1, 2]", None, [1, 2]),
        (b"{not json", "application/json", "{not json"),
        (b"", None, ""),
        (b"a=1&b=&a=3", "application/x-www-form-urlencoded", {"a": "3", "b": ""}),
        (b"name=caf%C3%A9", "application/x-www-form-urlencoded; charset=utf-8", {"name": "café"}),
        ("grüße".encode("latin-1"), "text/plain; charset=latin-1", "grüße"),
        (b"[" * 100_000, "application/json", "[" * 100_000),
    ],
)
def test_bodies_are_parsed_by_content_type(
    body: bytes, content_type: str | None, parsed: Any
) -> None:
    assert parse_body(body, content_type) == parsed


def test_a_multipart_form_body_gives_its_fields() -> None:
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="model"\r\n\r\n'
        b"recommendations\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="notes"; filename="notes.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        b"two\nlines\r\n"
        b"--XyZ--\r\n"
    )
    assert parse_body(body, "multipart/form-data; boundary=XyZ") == {
        "model": "recommendations",
        "notes": "two\nlines",
    }


# -- failures ---------------------------------------------------------------------------


def test_a_template_syntax_error_names_the_line() -> None:
    error = failure('{\n"event": "{{ body.x "\n}', request())
    assert error.message.startswith("the template failed: line 2:")
    assert error.rendered is None


def test_a_render_error_is_a_failure_with_its_reason() -> None:
    error = failure('{"event": "{{ body.x | no_such_filter }}"}', request())
    assert "no_such_filter" in error.message


def test_output_that_is_not_json_fails_and_keeps_what_was_rendered() -> None:
    template = '{"event": "e", "resource": {"prefect.resource.id": "{{ body.name }}"}}'
    req = request("post", b'{"name": "say \\"hi\\""}', "application/json")
    error = failure(template, req)
    assert error.message.startswith("the template's output is not JSON:")
    assert error.rendered == '{"event": "e", "resource": {"prefect.resource.id": "say "hi""}}'


def test_output_must_be_a_json_object() -> None:
    error = failure('[{"event": "{{ method }}"}]', request())
    assert error.message == "the template's output must be a JSON object (an event), not a list"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ('{"event": "e{{ "" }}"}', "resource: Field required"),
        ('{"event": "e{{ "" }}", "resource": {}}', "non-empty 'prefect.resource.id'"),
        ('{"resource": {"prefect.resource.id": "r{{ "" }}"}}', "event: Field required"),
        (
            '{"event": "e", "resource": {"prefect.resource.id": "r"}, "color": "{{ "red" }}"}',
            "color: Extra inputs are not permitted",
        ),
        (
            '{"event": "e", "resource": {"prefect.resource.id": "r"}, "occurred": "{{ 1 }}x"}',
            "occurred:",
        ),
    ],
)
def test_output_that_is_not_a_valid_event_fails_with_the_field(template: str, reason: str) -> None:
    error = failure(template, request())
    assert error.message.startswith("the template's output is not a valid event:")
    assert reason in error.message
    assert error.rendered is not None


def test_event_limits_apply_to_the_templates_event() -> None:
    limits = WebhookLimits(EventLimits(max_labels=3, max_payload_bytes=100), 65_536, 2.0)
    labels = (
        '{"event": "e", "resource": {"prefect.resource.id": "r", "a": "{{ 1 }}", "b": "2",'
        ' "c": "3"}}'
    )
    assert (
        "resource has 4 labels; at most 3 are allowed" in failure(labels, request(), limits).message
    )
    payload = (
        '{"event": "e", "resource": {"prefect.resource.id": "r"}, "payload": {{ body|tojson }}}'
    )
    big = json.dumps({"x": "y" * 200}).encode()
    reason = failure(payload, request("post", big, "application/json"), limits).message
    assert "at most 100 are allowed" in reason


def test_output_over_its_size_limit_fails() -> None:
    limits = WebhookLimits(EventLimits(), 64, 2.0)
    reason = failure("{{ body }}", request("post", b"x" * 100, "text/plain"), limits).message
    assert reason == "the template failed: the output is larger than 64 bytes"


def test_a_render_past_its_time_limit_fails() -> None:
    template = "{% for a in range(100) %}{% for b in range(100) %}{{ a }}{% endfor %}{% endfor %}"
    with pytest.raises(WebhookFailed, match="rendering took longer than 2 s"):
        render_webhook_event(
            template, request(), HOOK, received=RECEIVED, limits=LIMITS, clock=FakeClock(0.01)
        )


def test_a_template_cannot_reach_python_internals() -> None:
    # The sandbox refuses the attribute: the render fails, so no event.
    error = failure("{{ headers.__class__.__mro__ }}{{ body.__init__ }}", request())
    assert "not allowed" in error.message and error.rendered is None


def test_the_debugging_payload_shrinks_to_the_payload_limit() -> None:
    limits = WebhookLimits(EventLimits(max_payload_bytes=300), 65_536, 2.0)
    event = make(STATIC, request("post", b"z" * 5_000, "text/plain"), limits)
    assert event.payload["body_truncated"] is True
    assert event.payload["body"].startswith("zzz") and event.payload["body"].endswith("…")
    assert len(json.dumps(event.payload, separators=(",", ":"))) <= 300


# -- the failure event --------------------------------------------------------------------


def test_the_failure_event_names_the_webhook_and_holds_the_request_and_output() -> None:
    req = request("patch", b"a=1", "application/x-www-form-urlencoded", authorization="x")
    event = webhook_failed_event(
        HOOK, req, "boom", rendered="{oops", received=RECEIVED, limits=EventLimits()
    )
    assert event.event == WEBHOOK_FAILED == "marmot.webhook.failed"
    assert event.resource == {
        "prefect.resource.id": HOOK_RESOURCE,
        "prefect.resource.name": "github",
    }
    assert event.payload == {
        "error": "boom",
        "method": "PATCH",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "body": "a=1",
        "rendered": "{oops",
    }
    assert event.occurred == event.received == RECEIVED


def test_the_failure_event_fits_the_payload_limit() -> None:
    req = request("post", "é".encode() * 50_000, "text/plain")
    event = webhook_failed_event(
        HOOK,
        req,
        "bad",
        rendered="r" * 80_000,
        received=RECEIVED,
        limits=EventLimits(max_payload_bytes=2_000),
    )
    size = len(json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False).encode())
    assert size <= 2_000
    assert event.payload["error"] == "bad"
    assert event.payload["body_truncated"] is True and event.payload["rendered_truncated"] is True


# -- a webhook's definition ---------------------------------------------------------------


def test_a_static_template_must_make_a_valid_event_when_saved() -> None:
    check_webhook_template(STATIC)
    with pytest.raises(ValueError, match="the static template is not a valid event"):
        check_webhook_template('{"event": "e", "resource": {}}')
    with pytest.raises(ValueError, match="the static template is not JSON"):
        check_webhook_template("hello")
    with pytest.raises(ValueError, match="empty"):
        check_webhook_template("  ")


def test_a_dynamic_template_is_checked_for_syntax_when_saved() -> None:
    check_webhook_template('{"event": "{{ body.x }}"}')  # its output is seen per request
    with pytest.raises(ValueError, match="line 1"):
        check_webhook_template('{"event": "{{ body.x "}')


def test_a_spec_takes_a_mapping_template_as_its_json() -> None:
    spec = WebhookSpec.model_validate(
        {
            "name": "gh",
            "template": {"event": "push", "resource": {"prefect.resource.id": "{{ body.r }}"}},
        }
    )
    assert json.loads(spec.template)["resource"]["prefect.resource.id"] == "{{ body.r }}"
    assert spec.enabled is True and spec.description == ""


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"name": "", "template": STATIC}, "name"),
        ({"name": "  ", "template": STATIC}, "name"),
        ({"name": "x", "template": "{{ oops"}, "template"),
        ({"name": "x", "template": STATIC, "slug": "mine"}, "slug"),
        ({"name": "x"}, "template"),
    ],
)
def test_a_spec_refuses_bad_fields_and_a_chosen_slug(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validated_webhook(fields)
    assert caught.value.errors()[0]["loc"] == (where,)


# -- text that is not valid Unicode (found by tests/fuzz/test_webhook_fuzz.py) ----------


def test_a_lone_surrogate_in_a_json_body_is_replaced_not_fatal() -> None:
    # JSON may spell a lone surrogate; no UTF-8 encoder takes it, so the event
    # (which is logged and sent on) could not be stored as it was.
    raw = b'{"kind": "a\\ud800b"}'
    req = request("POST", raw, "application/json")
    assert parse_body(raw, "application/json") == {"kind": "a\ufffd\ufffd\ufffdb"}
    assert req.body == {"kind": "a\ufffd\ufffd\ufffdb"}
    event = make(STATIC, req)
    json.dumps(event.payload, ensure_ascii=False).encode("utf-8")  # storable
    assert event.payload["body"] == {"kind": "a\ufffd\ufffd\ufffdb"}
    # A surrogate pair is one character, kept as it is.
    assert parse_body(b'{"k": "\\ud83d\\ude00"}', "application/json") == {"k": "\U0001f600"}


def test_a_failure_with_a_lone_surrogate_in_its_output_is_still_reported() -> None:
    req = request("POST", b'{"kind": "\\ud800"}', "application/json")
    failed = failure('{"event": 7, "resource": {"prefect.resource.id": "{{ body.kind }}"}}', req)
    event = webhook_failed_event(
        HOOK,
        req,
        failed.message,
        rendered=failed.rendered,
        received=RECEIVED,
        limits=LIMITS.events,
    )
    json.dumps(event.payload, ensure_ascii=False).encode("utf-8")
    assert event.event == WEBHOOK_FAILED


def test_a_missing_field_fails_the_webhook_render_unless_a_default_is_given() -> None:
    form = request("POST", b"action=opened", "application/x-www-form-urlencoded")
    template = (
        '{"event": "github.{{ body.action }}", "resource": '
        '{"prefect.resource.id": "github.repo.{{ body.repository.name }}"}}'
    )
    problem = failure(template, form)
    assert "repository" in problem.message
    with_default = template.replace(
        "body.repository.name", "body.repository.name | default('unknown')"
    )
    assert make(with_default, form).resource["prefect.resource.id"] == "github.repo.unknown"
