"""Incoming webhooks as users define them, and the resource their events name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import Field, field_validator

from marmot.engine.models._base import MarmotModel
from marmot.engine.models.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE

__all__ = [
    "WEBHOOK_FAILED",
    "WEBHOOK_RESOURCE_PREFIX",
    "WEBHOOK_ROLE",
    "WebhookIdentity",
    "WebhookSpec",
]

WEBHOOK_FAILED = "marmot.webhook.failed"
"""Reports a request that made no event (Prefect Cloud's ``prefect-cloud.webhook.failed``)."""
WEBHOOK_RESOURCE_PREFIX = "marmot.webhook."
"""A webhook's resource id is this prefix and its id."""
WEBHOOK_ROLE = "webhook"
"""The role of the webhook among the related resources of the events it makes."""

MAX_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 10_000


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


class WebhookSpec(MarmotModel):
    """What a user says about a webhook: its name (unique), description, whether it is
    enabled, and its template. Its id and URL slug are Marmot's to assign.

    ``template`` is a Jinja string rendering to a JSON event; a mapping is taken as
    that JSON, written out (its string values may hold Jinja expressions). The
    template itself is checked where webhooks are accepted
    (``marmot.engine.templates.checks.check_webhook``).
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

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the name must not be blank")
        return value
