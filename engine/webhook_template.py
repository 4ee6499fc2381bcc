"""Incoming webhooks, the pure part: a request as Prefect's webhook templates see it
(``method``, ``headers``, ``body``), its template rendered in the sandbox into a validated
event, and the ``marmot.webhook.failed`` event reporting a request that made none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from pydantic import Field, ValidationError, field_validator

from marmot.engine.errors import MarmotError
from marmot.engine.models._base import MarmotModel
from marmot.engine.models.events import (
    MAX_PAYLOAD_DEPTH,
    RESOURCE_ID,
    RESOURCE_NAME,
    RESOURCE_ROLE,
    Event,
    EventLimits,
)
from marmot.engine.template_limits import TemplateFailed
from marmot.engine.template_sandbox import looks_like_template, template_problem
from marmot.engine.templating import render

__all__ = [
    "WEBHOOK_FAILED",
    "WEBHOOK_RESOURCE_PREFIX",
    "WEBHOOK_ROLE",
    "RequestHeaders",
    "WebhookFailed",
    "WebhookIdentity",
    "WebhookLimits",
    "WebhookRequest",
    "WebhookSpec",
    "check_webhook_template",
    "parse_body",
    "render_webhook_event",
    "webhook_failed_event",
]

WEBHOOK_FAILED = "marmot.webhook.failed"
"""Reports a request that made no event (Prefect Cloud's ``prefect-cloud.webhook.failed``)."""
WEBHOOK_RESOURCE_PREFIX = "marmot.webhook."
"""A webhook's resource id is this prefix and its id."""
WEBHOOK_ROLE = "webhook"
"""The role of the webhook among the related resources of the events it makes."""

MAX_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 10_000
# Headers Prefect removes before a template sees them, "to prevent accidental disclosures".
_HIDDEN_HEADERS = frozenset({"authorization", "proxy-authorization"})
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
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


class RequestHeaders(dict[str, str]):
    """A request's headers, read with a name in any case (``headers['Content-Type']`` and
    ``headers['content-type']`` are one header). Names are kept lower-cased, as HTTP/1.1
    servers hand them over; a repeated header's values are joined with ``", "``."""

    __slots__ = ()

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower() if isinstance(name, str) else name)

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower() if isinstance(name, str) else name, default)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name.lower() if isinstance(name, str) else name)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> RequestHeaders:
        """Headers from ``(name, value)`` pairs, without ``Authorization``."""
        found: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            if key in _HIDDEN_HEADERS:
                continue
            found[key] = f"{found[key]}, {value}" if key in found else value
        return cls(found)


def _media_type(content_type: str | None) -> tuple[str, str]:
    """The lower-cased media type of a ``Content-Type`` and its charset (utf-8 by default)."""
    if not content_type:
        return "", "utf-8"
    media, *params = content_type.split(";")
    charset = "utf-8"
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    return media.strip().lower(), charset


def _clean_text(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 encoder takes) replaced."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _clean(value: Any) -> Any:
    """JSON data whose strings all encode as UTF-8: JSON may spell a lone surrogate
    (``"\\ud800"``), which could then be neither logged nor sent on."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.loads(_clean_text(text))
    return value


def _decode(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


def _multipart_fields(body: bytes, content_type: str) -> dict[str, str] | None:
    """A multipart/form-data body's fields by name (file parts as their text), or None."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", errors="replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return None
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        fields[name] = _decode(data, part.get_content_charset() or "utf-8")
    return fields


def parse_body(body: bytes, content_type: str | None) -> Any:
    """A request body as templates see it, Prefect's best effort: form fields (a flat
    mapping, the last value of a repeated field winning) for
    ``application/x-www-form-urlencoded`` (and, in Marmot, ``multipart/form-data``); for
    any other type, the body parsed as JSON if it is JSON, else its text."""
    media, charset = _media_type(content_type)
    text = _decode(body, charset)
    if media == _FORM:
        return dict(parse_qsl(text, keep_blank_values=True))
    if media == _MULTIPART and content_type is not None:
        fields = _multipart_fields(body, content_type)
        if fields is not None:
            return fields
    try:
        return _clean(json.loads(text))
    except (ValueError, RecursionError):
        return text


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """An HTTP request received on a webhook's URL."""

    method: str
    headers: RequestHeaders
    body: bytes

    @classmethod
    def of(cls, method: str, headers: Iterable[tuple[str, str]], body: bytes) -> WebhookRequest:
        """A request from its method, its header pairs and its body."""
        return cls(method.upper(), RequestHeaders.of(headers), body)

    def body_text(self) -> str:
        """The body as text (in the charset its ``Content-Type`` names, else UTF-8)."""
        return _decode(self.body, _media_type(self.headers.get("content-type"))[1])

    def context(self) -> dict[str, Any]:
        """The template's variables, as Prefect names them: ``method`` (upper case),
        ``headers`` (case-insensitive, ``Authorization`` removed) and ``body`` (parsed)."""
        return {
            "method": self.method,
            "headers": self.headers,
            "body": parse_body(self.body, self.headers.get("content-type")),
        }


@dataclass(frozen=True, slots=True)
class WebhookIdentity:
    """Which webhook a request came to: the resource its events name."""

    id: UUID
    name: str

    def resource(self) -> dict[str, str]:
        """The webhook as a resource (``marmot.webhook.<id>``)."""
        return {RESOURCE_ID: f"{WEBHOOK_RESOURCE_PREFIX}{self.id}", RESOURCE_NAME: self.name}

    def related(self) -> dict[str, str]:
        """The webhook as a related resource, with the role ``webhook``."""
        return {**self.resource(), RESOURCE_ROLE: WEBHOOK_ROLE}


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


def _default_payload(request: WebhookRequest, body: Any, limit: int | None) -> dict[str, Any]:
    # Prefect: a template without a payload gets "a standard set of debugging
    # information, including the HTTP method, headers, and body".
    payload = {"method": request.method, "headers": dict(request.headers), "body": body}
    if limit is None:
        return payload
    if _depth(payload) <= MAX_PAYLOAD_DEPTH and _compact_size(payload) <= limit:
        return payload
    return _fitted({**payload, "body": request.body_text()}, ("body",), limit)


def _output_document(text: str) -> dict[str, Any]:
    try:
        document = _clean(json.loads(text))
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
        )
    except TemplateFailed as exc:
        raise WebhookFailed(f"the template failed: {exc.message}") from None
    document = _output_document(text)
    document.setdefault("occurred", received.isoformat())
    if "payload" not in document:
        document["payload"] = _default_payload(
            request, context["body"], limits.events.max_payload_bytes
        )
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
        "body": request.body_text(),
        "rendered": None if rendered is None else _clean_text(rendered),
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


class WebhookSpec(MarmotModel):
    """What a user says about a webhook: its name (unique), description, whether it is
    enabled, and its template. Its id and URL slug are Marmot's to assign.

    ``template`` is a Jinja string rendering to a JSON event; a mapping is taken as
    that JSON, written out (its string values may hold Jinja expressions).
    """

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    enabled: bool = True
    template: str

    @field_validator("template", mode="before")
    @classmethod
    def _mapping_as_json(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return value

    @field_validator("template")
    @classmethod
    def _checked(cls, value: str) -> str:
        check_webhook_template(value)
        return value

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the name must not be blank")
        return value
