"""The base of every block type's data: secret fields masked in public views and
revealed only on request, and how a mask (``********``) is told from a value.

Kept apart from :mod:`marmot.engine.models.blocks` (the envelope and the type
registry) so the block types in several modules can share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import Field, Secret, SecretStr, model_validator

from marmot.engine.models._base import MarmotModel

__all__ = ["OBFUSCATED", "BlockData", "NotifyType"]

OBFUSCATED = "********"
"""What a secret value looks like in a public view (Prefect's obfuscation)."""

NotifyType = Literal["prefect_default", "info", "success", "warning", "failure"]
"""Apprise's notification types; ``prefect_default`` is older Prefect's name for ``info``."""


def _masked(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: OBFUSCATED for key in value}
    return OBFUSCATED


def _is_obfuscated(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_is_obfuscated(v) for v in value.values())
    return isinstance(value, str) and len(value) >= 3 and set(value) == {"*"}


def _is_text(annotation: Any) -> bool:
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return annotation in (str, SecretStr) or (
        bool(options) and all(o in (str, SecretStr, type(None)) for o in options)
    )


class BlockData(MarmotModel):
    """The type-specific fields of a block; subclasses are the block types.

    ``block_type_slug`` tells the types apart when a document is validated and
    is left out of dumps (the envelope carries it).
    """

    can_notify: ClassVar[bool] = True
    """Whether ``send-notification`` may send through this type."""
    can_call: ClassVar[bool] = False
    """Whether ``call-webhook`` may call this type."""

    block_type_slug: str = Field(exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        # ``--set webhook_id=4242`` parses as JSON, giving a number; a text field
        # (a Discord webhook id, a numeric token) takes it as its digits.
        if not isinstance(value, Mapping):
            return value
        fixed = dict(value)
        for name, field in cls.model_fields.items():
            item = fixed.get(name)
            if isinstance(item, int) and not isinstance(item, bool) and _is_text(field.annotation):
                fixed[name] = str(item)
        return fixed

    def _secrets(self) -> dict[str, SecretStr | Secret[Any]]:
        found: dict[str, SecretStr | Secret[Any]] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr | Secret):
                found[name] = value
        return found

    def public_fields(self) -> dict[str, Any]:
        """The fields as JSON-safe values, each set secret replaced by ``********``
        (a secret mapping keeps its keys)."""
        out = self.model_dump(mode="json")
        for name, secret in self._secrets().items():
            out[name] = _masked(secret.get_secret_value())
        return out

    def secret_fields(self) -> dict[str, Any]:
        """Only the set secret fields, revealed, as JSON-safe values."""
        return {name: secret.get_secret_value() for name, secret in self._secrets().items()}

    def secret_values(self) -> list[str]:
        """Every secret string this block holds (to scrub from messages and logs)."""
        values: list[str] = []
        for revealed in self.secret_fields().values():
            items = revealed.values() if isinstance(revealed, Mapping) else [revealed]
            values.extend(str(v) for v in items if v)
        return values

    def obfuscated_fields(self) -> list[str]:
        """Names of secret fields holding a mask (``********``) rather than a value."""
        return [name for name, value in self.secret_fields().items() if _is_obfuscated(value)]
