"""Notification blocks: the documents that tell actions where to send things.

A ``BlockDocument`` is the envelope (id, name, block type slug, times) around
one type's ``data``. The types keep Prefect's slugs and field names, so a
block document read from a Prefect server maps onto them (``block_from_prefect``);
the Apprise-sent ones and ``custom-webhook`` are in ``service_blocks``.
Secret fields are pydantic secrets: masked in reprs, and shown as ``********``
(Prefect's obfuscation) in every public view.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parseaddr
from typing import Annotated, Any, ClassVar, Literal, Self, get_args
from uuid import UUID, uuid4

from pydantic import Field, Secret, SecretStr, ValidationError, field_validator, model_validator

from marmot.engine.errors import Unsupported, ValidationFailed
from marmot.engine.models._base import MarmotModel
from marmot.engine.models.block_data import OBFUSCATED, BlockData, NotifyType
from marmot.engine.models.service_blocks import (
    CustomWebhook,
    DiscordWebhook,
    MattermostWebhook,
    OpsgenieWebhook,
    PagerDutyWebhook,
    SendgridEmail,
    TwilioSMS,
)

__all__ = [
    "BLOCK_TYPES",
    "OBFUSCATED",
    "BlockData",
    "BlockDataTypes",
    "BlockDocument",
    "BlockTypeSlug",
    "EmailNotification",
    "MicrosoftTeamsWebhook",
    "NotifyType",
    "SMTPType",
    "SlackWebhook",
    "Webhook",
    "WebhookMethod",
    "block_from_prefect",
]

BlockTypeSlug = Literal[
    "slack-webhook",
    "ms-teams-webhook",
    "email",
    "webhook",
    "custom-webhook",
    "discord-webhook",
    "mattermost-webhook",
    "pager-duty-webhook",
    "opsgenie-webhook",
    "sendgrid-email",
    "twilio-sms",
]
"""The block types Marmot stores and sends through, by Prefect's slug."""

SMTPType = Literal["SSL", "STARTTLS", "INSECURE"]
WebhookMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

# Prefect's rule for block document names; it also keeps ``TYPE/NAME`` references
# unambiguous on the command line.
_NAME = re.compile(r"[a-z0-9-]+")

# Prefect's SMTPType values double as the default port of each kind of connection.
_DEFAULT_SMTP_PORTS: dict[str, int] = {"SSL": 465, "STARTTLS": 587, "INSECURE": 25}
_SMTP_TYPE_ALIASES = {"NONE": "INSECURE", "PLAIN": "INSECURE", "TLS": "SSL"}
_PRIVATE = "allow URLs whose host is private or loopback"


class SlackWebhook(BlockData):
    """A Slack incoming webhook (Prefect's ``slack-webhook``).

    ``notify_type`` is kept for Prefect's documents; Marmot's message does not
    use it. ``allow_private_urls: false`` refuses URLs that resolve to private
    addresses.
    """

    block_type_slug: Literal["slack-webhook"] = Field("slack-webhook", exclude=True)
    url: SecretStr = Field(description="the incoming webhook URL")
    notify_type: NotifyType = Field("prefect_default", description="kept, not used")
    allow_private_urls: bool = Field(True, description=_PRIVATE)


class MicrosoftTeamsWebhook(BlockData):
    """A Microsoft Teams webhook, a Workflows (Power Automate) URL or a legacy
    connector URL (Prefect's ``ms-teams-webhook``).

    ``wrap`` wraps the card's text; ``notify_type`` and ``include_image`` are
    kept for Prefect's documents and not used.
    """

    block_type_slug: Literal["ms-teams-webhook"] = Field("ms-teams-webhook", exclude=True)
    url: SecretStr = Field(description="the Workflows (or connector) URL")
    notify_type: NotifyType = Field("prefect_default", description="kept, not used")
    allow_private_urls: bool = Field(True, description=_PRIVATE)
    include_image: bool = Field(True, description="kept, not used")
    wrap: bool = Field(True, description="wrap the card's text")


class EmailNotification(BlockData):
    """An SMTP server and the addresses to mail (Marmot's ``email``).

    Server fields keep the names of Prefect's ``EmailServerCredentials``;
    ``smtp_type`` is ``SSL`` (implicit TLS), ``STARTTLS`` or ``INSECURE`` (no
    TLS; ``none`` is accepted for it). Without ``email_from`` mail is sent
    from ``username``, as Prefect does.
    """

    block_type_slug: Literal["email"] = Field("email", exclude=True)
    smtp_server: str = Field(min_length=1, description="the SMTP server's host")
    smtp_port: int | None = Field(
        default=None, ge=1, le=65_535, description="its port (default: by smtp_type)"
    )
    smtp_type: SMTPType = Field("SSL", description="SSL, STARTTLS or INSECURE")
    username: str | None = Field(None, description="the login")
    password: SecretStr | None = Field(None, description="the login's password")
    verify: bool = Field(True, description="check the server's certificate")
    email_from: str | None = Field(None, description="the From address (default: username)")
    email_to: list[str] = Field(min_length=1, description="the recipients")

    @field_validator("smtp_type", mode="before")
    @classmethod
    def _normalise_smtp_type(cls, value: Any) -> Any:
        if isinstance(value, str):
            upper = value.strip().upper()
            return _SMTP_TYPE_ALIASES.get(upper, upper)
        return value

    @field_validator("email_to", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        # Prefect's email task takes one address string or a list; accept both.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("email_to")
    @classmethod
    def _check_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value

    @field_validator("email_from")
    @classmethod
    def _check_sender(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value)

    @model_validator(mode="after")
    def _has_sender(self) -> Self:
        if self.email_from is None and not self.username:
            raise ValueError("email_from is required when no username is set")
        return self

    @property
    def port(self) -> int:
        """The port to connect to: ``smtp_port``, else the default of ``smtp_type``."""
        return self.smtp_port or _DEFAULT_SMTP_PORTS[self.smtp_type]

    @property
    def sender(self) -> str:
        """The From address: ``email_from``, else ``username``."""
        return self.email_from or self.username or ""


def _check_address(address: str) -> str:
    if "\r" in address or "\n" in address:
        raise ValueError("an email address must not contain line breaks")
    _, addr = parseaddr(address)
    local, at, domain = addr.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in addr):
        raise ValueError(f"{address!r} is not an email address")
    return address


class Webhook(BlockData):
    """A generic webhook (Prefect's ``webhook``): method, URL and headers.

    The URL and the headers are secrets, as in Prefect's block.
    """

    can_call: ClassVar[bool] = True

    block_type_slug: Literal["webhook"] = Field("webhook", exclude=True)
    method: WebhookMethod = Field("POST", description="the HTTP method")
    url: SecretStr = Field(description="the URL")
    headers: Secret[dict[str, str]] = Field(
        default_factory=lambda: Secret[dict[str, str]]({}), description="request headers"
    )
    allow_private_urls: bool = Field(True, description=_PRIVATE)
    verify: bool = Field(True, description="check the server's certificate")

    @field_validator("method", mode="before")
    @classmethod
    def _upper_case_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


BlockDataTypes = Annotated[
    SlackWebhook
    | MicrosoftTeamsWebhook
    | EmailNotification
    | Webhook
    | CustomWebhook
    | DiscordWebhook
    | MattermostWebhook
    | PagerDutyWebhook
    | OpsgenieWebhook
    | SendgridEmail
    | TwilioSMS,
    Field(discriminator="block_type_slug"),
]
"""Any block's data, told apart by its type slug."""

BLOCK_TYPES: dict[str, type[BlockData]] = {
    cls.model_fields["block_type_slug"].default: cls
    for cls in get_args(get_args(BlockDataTypes)[0])
}
"""Each block type slug mapped to its data class."""


class BlockDocument(MarmotModel):
    """A stored block: its id (an action's ``block_document_id``), name, type and data.

    ``created`` and ``updated`` are set by the store.
    """

    id: UUID = Field(default_factory=uuid4)
    name: str = Field(min_length=1, max_length=255)
    block_type_slug: BlockTypeSlug
    data: BlockDataTypes
    created: datetime | None = None
    updated: datetime | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("a block name may hold only lowercase letters, digits and dashes")
        return value

    @model_validator(mode="before")
    @classmethod
    def _slug_into_data(cls, value: Any) -> Any:
        # The data's type comes from the envelope: hand the slug down so the
        # discriminated union picks the class.
        if isinstance(value, Mapping):
            slug, data = value.get("block_type_slug"), value.get("data")
            if isinstance(slug, str) and isinstance(data, Mapping):
                value = {**value, "data": {"block_type_slug": slug, **data}}
        return value

    @model_validator(mode="after")
    def _slugs_agree(self) -> Self:
        if self.data.block_type_slug != self.block_type_slug:
            raise ValueError(
                f"data is for a {self.data.block_type_slug} block, not {self.block_type_slug}"
            )
        return self

    def describe(self) -> str:
        """A short label for messages, e.g. ``slack-webhook 'ops'`` (never a secret)."""
        return f"{self.block_type_slug} {self.name!r}"

    def public_view(self) -> dict[str, Any]:
        """The document as JSON-safe values with every secret shown as ``********``."""
        return {
            "id": str(self.id),
            "name": self.name,
            "block_type_slug": self.block_type_slug,
            "data": self.data.public_fields(),
            "created": None if self.created is None else self.created.isoformat(),
            "updated": None if self.updated is None else self.updated.isoformat(),
        }

    def create_document(self) -> dict[str, Any]:
        """The document as JSON-safe values with its secrets revealed, to create it
        elsewhere (the client sends this over RPC)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "block_type_slug": self.block_type_slug,
            "data": {**self.data.public_fields(), **self.data.secret_fields()},
        }


def block_from_prefect(document: Mapping[str, Any]) -> BlockDocument:
    """Map a Prefect block document (``GET /block_documents/{id}`` JSON) onto a
    ``BlockDocument``; returns it.

    Fields of the data that Marmot's type does not have are dropped. Raises
    ``Unsupported`` for a block type Marmot cannot send through and
    ``ValidationFailed`` when the data does not fit the type or its secrets
    came back obfuscated (the document was read without ``include_secrets``).
    """
    block_type = document.get("block_type")
    slug = block_type.get("slug") if isinstance(block_type, Mapping) else None
    slug = slug or document.get("block_type_slug")
    kind = BLOCK_TYPES.get(slug) if isinstance(slug, str) else None
    if kind is None:
        raise Unsupported(
            f"block type {slug!r} is not one Marmot can use "
            f"(it uses {', '.join(sorted(BLOCK_TYPES))})",
            details=slug,
        )
    raw = document.get("data")
    fields = raw if isinstance(raw, Mapping) else {}
    data = {k: v for k, v in fields.items() if k in kind.model_fields and k != "block_type_slug"}
    block_id = document.get("id")
    try:
        block = BlockDocument.model_validate(
            {
                "id": block_id,
                "name": document.get("name") or f"anonymous-{block_id}",
                "block_type_slug": slug,
                "data": data,
                "created": document.get("created"),
                "updated": document.get("updated"),
            }
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"] if p != slug)
        raise ValidationFailed(
            f"block document {block_id} does not fit {slug}: {where}: {first['msg']}",
            details=[
                {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
                for e in exc.errors(include_url=False)
            ],
        ) from None
    masked = block.data.obfuscated_fields()
    if masked:
        raise ValidationFailed(
            f"block document {block_id} came back with obfuscated secrets "
            f"({', '.join(masked)}); read it with include_secrets=true",
            details=masked,
        )
    return block
