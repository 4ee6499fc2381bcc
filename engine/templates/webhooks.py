"""Incoming webhooks, the pure part: a request's template rendered in the sandbox into a
validated event, and the ``marmot.webhook.failed`` event reporting a request that made
none. The request arrives already parsed (``transport.webhook_requests``): its method,
headers, body as templates see it, and body text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from marmot.engine.errors import MarmotError
from marmot.engine.models.events import MAX_PAYLOAD_DEPTH, Event, EventLimits
from marmot.engine.models.webhooks import WEBHOOK_FAILED, WebhookIdentity
from marmot.engine.templates.limits import TemplateFailed
from marmot.engine.templates.rendering import render
from marmot.engine.templates.sandbox import looks_like_template, template_problem

__all__ = [
    "WebhookFailed",
    "WebhookLimits",
    "WebhookRequest",
    "check_webhook_template",
    "clean_json",
    "clean_text",
    "render_webhook_event",
    "webhook_failed_event",
]

# Compact JSON, as the event log stores payloads (and measures them against the limit).
_SEPARATORS = (",", ":")
# A failure's reason is cut to this many characters in its event and its HTTP reply.
_MAX_REASON_CHARS = 1_000
_CUT = "…"


class WebhookFailed(MarmotError):
    """Raised when a request makes no event: its template failed, or its output is not an
    event. ``rendered`` is what the template rendered, when it got that far."""

    code = "webhook_failed"

    def __init__(self, message: str, *, rendered: str | None = None) -> None:
        super().__init__(message[:_MAX_REASON_CHARS])
        self.rendered = rendered


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 encoder takes) replaced."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def clean_json(value: Any) -> Any:
    """JSON data whose strings all encode as UTF-8: JSON may spell a lone surrogate
    (``"\\ud800"``), which could then be neither logged nor sent on."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.loads(clean_text(text))
    return value


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """An HTTP request received on a webhook's URL, as templates see it: ``method``
    (upper case), ``headers`` (read in any case, ``Authorization`` removed), ``body``
    (form fields, JSON or text) and the body's raw ``text``."""

    method: str
    headers: Mapping[str, str]
    body: Any
    text: str

    def context(self) -> dict[str, Any]:
        """The template's variables, as Prefect names them."""
        return {"method": self.method, "headers": self.headers, "body": self.body}


@dataclass(frozen=True, slots=True)
class WebhookLimits:
    """Bounds on one request's event: the event limits, the template's output size
    (bytes) and render time (seconds, on the clock the caller passes)."""

    events: EventLimits
    max_output_bytes: int
    timeout_s: float


# --- rendering -------------------------------------------------------------------------


def _compact_size(value: Any) -> int:
    text = json.dumps(value, separators=_SEPARATORS, ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def _depth(value: Any) -> int:
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _fitted(payload: dict[str, Any], texts: tuple[str, ...], limit: int) -> dict[str, Any]:
    """``payload`` cut down to ``limit`` bytes of compact JSON: its ``texts`` fields
    shortened (longest first), then its headers dropped, then everything but the error."""
    fitted = dict(payload)
    for _ in range(2 * len(texts) + 2):
        excess = _compact_size(fitted) - limit
        if excess <= 0:
            return fitted
        present = [key for key in texts if fitted.get(key)]
        if not present:
            break
        longest = max(present, key=lambda key: len(fitted[key]))
        text: str = fitted[longest]
        # Each character is at least a byte: cutting the excess in characters (and
        # room for the mark and the flag) cuts at least the excess in bytes.
        keep = len(text) - excess - 32
        fitted[longest] = text[:keep] + _CUT if keep > 0 else ""
        fitted[f"{longest}_truncated"] = True
    if _compact_size(fitted) > limit and "headers" in fitted:
        fitted["headers"] = {}
        fitted["headers_truncated"] = True
    if _compact_size(fitted) > limit:
        fitted = {key: fitted[key] for key in ("error",) if key in fitted}
    return fitted if _compact_size(fitted) <= limit else {}


def _default_payload(request: WebhookRequest, limit: int | None) -> dict[str, Any]:
    # Prefect: a template without a payload gets "a standard set of debugging
    # information, including the HTTP method, headers, and body".
    payload = {"method": request.method, "headers": dict(request.headers), "body": request.body}
    if limit is None:
        return payload
    if _depth(payload) <= MAX_PAYLOAD_DEPTH and _compact_size(payload) <= limit:
        return payload
    return _fitted({**payload, "body": request.text}, ("body",), limit)


def _output_document(text: str) -> dict[str, Any]:
    try:
        document = clean_json(json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise WebhookFailed(f"the template's output is not JSON: {exc}", rendered=text) from None
    if not isinstance(document, dict):
        kind = "a list" if isinstance(document, list) else f"a {type(document).__name__}"
        raise WebhookFailed(
            f"the template's output must be a JSON object (an event), not {kind}", rendered=text
        )
    return document


def _problem(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def _event(
    document: dict[str, Any], received: datetime, limits: EventLimits, rendered: str
) -> Event:
    try:
        return Event.model_validate(document, context={"limits": limits, "received": received})
    except ValidationError as exc:
        raise WebhookFailed(
            f"the template's output is not a valid event: {_problem(exc)}", rendered=rendered
        ) from None


def render_webhook_event(
    template: str,
    request: WebhookRequest,
    webhook: WebhookIdentity,
    *,
    received: datetime,
    limits: WebhookLimits,
    clock: Callable[[], float],
) -> Event:
    """The event ``template`` makes of ``request``, validated and stamped ``received``.

    As in Prefect: the template renders (Jinja, in the sandbox) to a JSON object
    with at least ``event`` and ``resource``; ``occurred`` defaults to ``received``
    and ``id`` to a new one; a missing ``payload`` is the request's method,
    headers and body; the webhook is added to ``related`` (role ``webhook``).
    ``clock`` is monotonic seconds, for the render's time limit. Raises
    :class:`WebhookFailed` with the reason (and what was rendered, if anything).
    """
    context = request.context()
    try:
        text = render(
            template,
            context,
            max_bytes=limits.max_output_bytes,
            deadline_s=limits.timeout_s,
            now=clock,
            strict=True,
        )
    except TemplateFailed as exc:
        raise WebhookFailed(f"the template failed: {exc.message}") from None
    document = _output_document(text)
    document.setdefault("occurred", received.isoformat())
    if "payload" not in document:
        document["payload"] = _default_payload(request, limits.events.max_payload_bytes)
    related = document.setdefault("related", [])
    if isinstance(related, list):
        document["related"] = [*related, webhook.related()]
    return _event(document, received, limits.events, text)


def webhook_failed_event(
    webhook: WebhookIdentity,
    request: WebhookRequest,
    reason: str,
    *,
    rendered: str | None,
    received: datetime,
    limits: EventLimits,
) -> Event:
    """``marmot.webhook.failed`` for a request that made no event: the webhook is its
    resource; its payload holds the ``error``, the request's ``method``, ``headers`` and
    ``body`` (as text) and what the template ``rendered`` (or null), cut to the payload
    limit (a cut field is marked ``<field>_truncated``)."""
    payload: dict[str, Any] = {
        "error": reason[:_MAX_REASON_CHARS],
        "method": request.method,
        "headers": dict(request.headers),
        "body": request.text,
        "rendered": None if rendered is None else clean_text(rendered),
    }
    if limits.max_payload_bytes is not None:
        payload = _fitted(payload, ("body", "rendered"), limits.max_payload_bytes)
    return Event.model_validate(
        {
            "occurred": received,
            "event": WEBHOOK_FAILED,
            "resource": webhook.resource(),
            "payload": payload,
        },
        context={"limits": limits, "received": received},
    )


# --- a webhook's definition -------------------------------------------------------------

# A fixed time for checking a static template's event: checks read no clock.
_CHECK_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def check_webhook_template(source: str) -> None:
    """Check a webhook's template when it is saved; raises ``ValueError`` with the reason.

    Every template must pass the sandbox's checks (size, syntax naming the line,
    loops). A static template (no ``{{`` or ``{%``) is its own output, so it must
    also be a JSON object that makes a valid event.
    """
    if not source.strip():
        raise ValueError("the template is empty")
    problem = template_problem(source)
    if problem is not None:
        raise ValueError(problem)
    if looks_like_template(source):
        return
    try:
        document = _output_document(source)
        document.setdefault("occurred", _CHECK_TIME.isoformat())
        _event(document, _CHECK_TIME, EventLimits(), source)
    except WebhookFailed as exc:
        message = exc.message.replace("the template's output", "the static template")
        raise ValueError(message) from None
