"""A webhook's HTTP request made ready for its template: headers read in any case,
``Authorization`` hidden, and the body parsed as Prefect parses it (form fields,
multipart fields, JSON or text, in the charset the request names)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

from marmot.engine.templates.webhooks import WebhookRequest, clean_json

__all__ = ["RequestHeaders", "parse_body", "webhook_request"]

# Headers Prefect removes before a template sees them, "to prevent accidental disclosures".
_HIDDEN_HEADERS = frozenset({"authorization", "proxy-authorization"})
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"


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
        return clean_json(json.loads(text))
    except (ValueError, RecursionError):
        return text


def webhook_request(method: str, headers: Iterable[tuple[str, str]], body: bytes) -> WebhookRequest:
    """A request from its method, its header pairs and its body, parsed for its template."""
    read = RequestHeaders.of(headers)
    content_type = read.get("content-type")
    return WebhookRequest(
        method=method.upper(),
        headers=read,
        body=parse_body(body, content_type),
        text=_decode(body, _media_type(content_type)[1]),
    )
