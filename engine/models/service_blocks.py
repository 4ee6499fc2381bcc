"""The notification blocks Prefect sends through Apprise (Discord, Mattermost, PagerDuty,
Opsgenie, SendGrid, Twilio) and its ``custom-webhook`` block, with Prefect's slugs,
field names and defaults, so a block document read from a Prefect server fits them.

Only data and checks live here; the sending is in ``transport/apprise_notify.py``
and ``transport/custom_webhook.py``. :func:`fill_placeholders` is the custom
webhook's ``{{ key }}`` substitution, as Prefect's ``apply_values`` does it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import AnyHttpUrl, Field, Secret, SecretStr, field_validator, model_validator

from marmot.engine.models.block_data import BlockData, NotifyType

__all__ = [
    "CUSTOM_WEBHOOK_KEYS",
    "CustomWebhook",
    "DiscordWebhook",
    "MattermostWebhook",
    "OpsgenieWebhook",
    "PagerDutyWebhook",
    "SendgridEmail",
    "TwilioSMS",
    "fill_placeholders",
    "placeholders_in",
]

Region = Literal["us", "eu"]

# Prefect's placeholder syntax (``{{ name }}``, dotted and indexed names allowed).
_PLACEHOLDER = re.compile(r"({{\s*([\w\.\-\[\]$]+)\s*}})")
# Apprise's own checks on Twilio's fields, so a bad block fails when it is created.
_TWILIO_SID = re.compile(r"AC[a-f0-9]+", re.IGNORECASE)
_PHONE = re.compile(r"\+?[0-9\s)(+-]+")
_MIN_PHONE_DIGITS = 10

_NOTIFY_TYPE = "info, success, warning or failure"

CUSTOM_WEBHOOK_KEYS = ("subject", "body", "name")
"""The values a custom webhook's placeholders may name, besides its ``secrets``."""


class DiscordWebhook(BlockData):
    """A Discord incoming webhook, by its id and token (Prefect's ``discord-webhook``)."""

    block_type_slug: Literal["discord-webhook"] = Field("discord-webhook", exclude=True)
    webhook_id: SecretStr = Field(description="the webhook's id (first part of its URL)")
    webhook_token: SecretStr = Field(description="the webhook's token (second part)")
    botname: str | None = Field(None, description="the name the message is posted as")
    tts: bool = Field(False, description="read the message aloud (text-to-speech)")
    include_image: bool = Field(False, description="add Apprise's notify-type image")
    avatar: bool = Field(False, description="override the webhook's avatar")
    avatar_url: str | None = Field(None, description="the avatar image to use")
    notify_type: NotifyType = Field("info", description=_NOTIFY_TYPE)


class MattermostWebhook(BlockData):
    """A Mattermost incoming webhook on a server (Prefect's ``mattermost-webhook``):
    ``http(s)://hostname:port[path]/hooks/token``."""

    block_type_slug: Literal["mattermost-webhook"] = Field("mattermost-webhook", exclude=True)
    hostname: str = Field(min_length=1, description="the Mattermost server's host")
    secure: bool = Field(False, description="use https")
    token: SecretStr = Field(description="the incoming webhook's token")
    botname: str | None = Field(None, description="the name the message is posted as")
    channels: list[str] | None = Field(
        None, description="channels to post to (one request each, 5.5 s apart)"
    )
    include_image: bool = Field(False, description="add Apprise's notify-type image")
    path: str | None = Field(None, description="a sub-path before /hooks/TOKEN")
    port: int = Field(default=8065, ge=1, le=65_535, description="the server's port")
    notify_type: NotifyType = Field("info", description=_NOTIFY_TYPE)


class PagerDutyWebhook(BlockData):
    """A PagerDuty Events API v2 integration (Prefect's ``pager-duty-webhook``).

    ``notify_type`` sets the event's severity. With a subject, the subject is the
    alert's summary and the body goes in ``custom_details`` as
    ``Prefect Notification Body``, as Prefect does.
    """

    block_type_slug: Literal["pager-duty-webhook"] = Field("pager-duty-webhook", exclude=True)
    integration_key: SecretStr = Field(description="the Events API v2 routing key")
    api_key: SecretStr = Field(description="a PagerDuty API key")
    source: str | None = Field("Prefect", description="the alert's source")
    component: str = Field("Notification", description="the alert's component")
    group: str | None = Field(None, description="the alert's group")
    class_id: str | None = Field(None, description="the alert's class")
    region_name: Region = Field("us", description="PagerDuty's region: us or eu")
    clickable_url: AnyHttpUrl | None = Field(None, description="a link on the alert")
    include_image: bool = Field(True, description="add Apprise's notify-type image")
    custom_details: dict[str, str] | None = Field(None, description="extra alert details")
    notify_type: NotifyType = Field("info", description="the severity: " + _NOTIFY_TYPE)


class OpsgenieWebhook(BlockData):
    """An Opsgenie alert (Prefect's ``opsgenie-webhook``), sent to users, teams,
    schedules and escalations, or to the API key's default when none is named.

    Apprise spaces requests to one service 5.5 s apart, so many targets without
    ``batch`` can outlast ``executors.action_timeout_s``.
    """

    block_type_slug: Literal["opsgenie-webhook"] = Field("opsgenie-webhook", exclude=True)
    apikey: SecretStr = Field(description="an Opsgenie API integration key")
    target_user: list[str] | None = Field(None, description="users to notify")
    target_team: list[str] | None = Field(None, description="teams to notify")
    target_schedule: list[str] | None = Field(None, description="schedules to notify")
    target_escalation: list[str] | None = Field(None, description="escalations to notify")
    region_name: Region = Field("us", description="Opsgenie's region: us or eu")
    batch: bool = Field(
        False, description="one request for all targets (else one each, 5.5 s apart)"
    )
    tags: list[str] | None = Field(None, description="the alert's tags")
    priority: int | None = Field(3, description="1 (low) to 5 (emergency)")
    alias: str | None = Field(None, description="the alert's alias (deduplication)")
    entity: str | None = Field(None, description="the alert's entity")
    details: dict[str, str] | None = Field(None, description="extra alert details")
    notify_type: NotifyType = Field("info", description=_NOTIFY_TYPE)

    def targets(self) -> list[str]:
        """Apprise's target list: ``@user``, ``#team``, ``*schedule``, ``^escalation``."""
        marked = [
            ("@", self.target_user),
            ("#", self.target_team),
            ("*", self.target_schedule),
            ("^", self.target_escalation),
        ]
        return [f"{mark}{name}" for mark, names in marked for name in names or ()]


class SendgridEmail(BlockData):
    """Email through SendGrid's API (Prefect's ``sendgrid-email``)."""

    block_type_slug: Literal["sendgrid-email"] = Field("sendgrid-email", exclude=True)
    api_key: SecretStr = Field(description="a SendGrid API key")
    sender_email: str = Field(min_length=3, description="the From address")
    to_emails: list[str] = Field(min_length=1, description="the recipients")
    notify_type: NotifyType = Field("info", description=_NOTIFY_TYPE)

    @field_validator("sender_email")
    @classmethod
    def _check_sender(cls, value: str) -> str:
        return _check_email(value)

    @field_validator("to_emails")
    @classmethod
    def _check_recipients(cls, value: list[str]) -> list[str]:
        return [_check_email(address) for address in value]


class TwilioSMS(BlockData):
    """SMS through Twilio (Prefect's ``twilio-sms``)."""

    block_type_slug: Literal["twilio-sms"] = Field("twilio-sms", exclude=True)
    account_sid: str = Field(description="the account SID (AC...)")
    auth_token: SecretStr = Field(description="the account's auth token")
    from_phone_number: str = Field(description="a Twilio number to send from")
    to_phone_numbers: list[str] = Field(min_length=1, description="numbers to text")
    notify_type: NotifyType = Field("info", description=_NOTIFY_TYPE)

    @field_validator("account_sid")
    @classmethod
    def _check_sid(cls, value: str) -> str:
        if not _TWILIO_SID.fullmatch(value.strip()):
            raise ValueError("a Twilio account SID starts with AC followed by hex digits")
        return value.strip()

    @field_validator("from_phone_number")
    @classmethod
    def _check_sender(cls, value: str) -> str:
        return _check_phone(value)

    @field_validator("to_phone_numbers")
    @classmethod
    def _check_recipients(cls, value: list[str]) -> list[str]:
        return [_check_phone(number) for number in value]


class CustomWebhook(BlockData):
    """Any HTTP endpoint (Prefect's ``custom-webhook``): the URL, query, JSON or form
    data, headers and cookies may hold ``{{ subject }}``, ``{{ body }}``,
    ``{{ name }}`` and ``{{ key }}`` for each key of ``secrets``.

    Unlike Prefect's generic ``webhook`` block, this one can send notifications;
    ``call-webhook`` still needs a ``webhook`` block.
    """

    block_type_slug: Literal["custom-webhook"] = Field("custom-webhook", exclude=True)
    name: str = Field(min_length=1, description="the webhook's name ({{ name }})")
    url: str = Field(min_length=1, description="the URL (placeholders allowed)")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "POST", description="the HTTP method"
    )
    params: dict[str, str] | None = Field(None, description="query parameters")
    json_data: dict[str, Any] | None = Field(None, description="a JSON body")
    form_data: dict[str, str] | str | None = Field(
        None, description="a form body, or a raw string body (not with json_data)"
    )
    headers: dict[str, str] | None = Field(None, description="request headers")
    cookies: dict[str, str] | None = Field(None, description="request cookies")
    timeout: float = Field(default=10.0, gt=0, description="the request's time-out, seconds")
    allow_private_urls: bool = Field(True, description="allow private and loopback hosts")
    secrets: Secret[dict[str, Any]] = Field(
        default_factory=lambda: Secret[dict[str, Any]]({}),
        description="values for {{ key }} placeholders, kept secret",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper_case_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_templates(self) -> Self:
        # Prefect's checks when the block is loaded: one kind of payload, and
        # every placeholder names a known value.
        if self.form_data is not None and self.json_data is not None:
            raise ValueError("give json_data or form_data, not both")
        known = {*CUSTOM_WEBHOOK_KEYS, *self.secrets.get_secret_value()}
        for field in ("url", "params", "form_data", "json_data", "headers", "cookies"):
            unknown = sorted(placeholders_in(getattr(self, field)) - known)
            if unknown:
                raise ValueError(
                    f"{field} names {', '.join(unknown)}, which is neither "
                    f"{', '.join(CUSTOM_WEBHOOK_KEYS)} nor a key of secrets"
                )
        return self

    def placeholder_values(self, subject: str | None, body: str) -> dict[str, Any]:
        """What the placeholders stand for: the secrets, then ``subject`` (``null``
        when there is none, as in Prefect), ``body`` and ``name``."""
        return {
            **self.secrets.get_secret_value(),
            "subject": "null" if subject is None else subject,
            "body": body,
            "name": self.name,
        }


def placeholders_in(template: Any) -> set[str]:
    """The names of every ``{{ name }}`` placeholder in a string, or in the strings
    of nested dicts and lists."""
    if isinstance(template, str):
        return {name for _, name in _PLACEHOLDER.findall(template)}
    if isinstance(template, Mapping):
        return set().union(*(placeholders_in(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(*(placeholders_in(v) for v in template))
    return set()


_MISSING = object()


def _lookup(values: Mapping[str, Any], name: str) -> Any:
    found: Any = values
    for part in name.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return _MISSING
        found = found[part]
    return found


def fill_placeholders(template: Any, values: Mapping[str, Any]) -> Any:
    """``template`` with its placeholders replaced, Prefect's way.

    A string that is one placeholder becomes the value itself (any type, None
    when it has none); in other strings each placeholder is replaced by the
    value's text, or by nothing. Dict entries and list items whose lone
    placeholder has no value are dropped. Other values pass unchanged.
    """
    filled = _fill(template, values)
    return None if filled is _MISSING else filled


def _fill(template: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        found = _PLACEHOLDER.findall(template)
        if not found:
            return template
        if len(found) == 1 and found[0][0] == template:
            return _lookup(values, found[0][1])
        return _PLACEHOLDER.sub(lambda m: _text(_lookup(values, m.group(2))), template)
    if isinstance(template, Mapping):
        filled = {key: _fill(value, values) for key, value in template.items()}
        return {key: value for key, value in filled.items() if value is not _MISSING}
    if isinstance(template, list):
        items = [_fill(item, values) for item in template]
        return [item for item in items if item is not _MISSING]
    return template


def _text(value: Any) -> str:
    return "" if value is _MISSING else str(value)


def _check_email(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if not (local and at and "." in domain) or any(c.isspace() for c in address.strip()):
        raise ValueError(f"{address!r} is not an email address")
    return address.strip()


def _check_phone(number: str) -> str:
    digits = sum(c.isdigit() for c in number)
    if not _PHONE.fullmatch(number.strip()) or digits < _MIN_PHONE_DIGITS:
        raise ValueError(f"{number!r} is not a phone number (at least 10 digits)")
    return number.strip()
