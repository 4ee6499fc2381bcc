"""Template checks for documents when they are saved, as Prefect checks them.

The models say which fields hold templates (``Action.template_fields`` and
``parameter_fields``); the edges that accept automations and webhooks (RPC,
files, replay) call ``validated_automation`` / ``validated_webhook``, which
report a bad template as pydantic does a bad field: a ``ValidationError``
whose location names the field (``actions.0.call-webhook.payload``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails

from marmot.engine.models.actions import Action
from marmot.engine.models.automations import Automation
from marmot.engine.models.webhooks import WebhookSpec
from marmot.engine.templates.hydration import check_parameters
from marmot.engine.templates.rendering import check_template
from marmot.engine.templates.webhooks import check_webhook_template

__all__ = [
    "action_problems",
    "check_automation",
    "check_webhook",
    "validated_automation",
    "validated_webhook",
]

_ACTION_LISTS = ("actions", "actions_on_trigger", "actions_on_resolve")


def _error(loc: tuple[str | int, ...], value: Any, message: str) -> InitErrorDetails:
    return {"type": "value_error", "loc": loc, "input": value, "ctx": {"error": message}}


def action_problems(action: Action) -> list[tuple[str, Any, str]]:
    """``(field, value, message)`` for each templated field of ``action`` that fails."""
    problems: list[tuple[str, Any, str]] = []
    for field in action.template_fields:
        value = getattr(action, field)
        if value is None:
            continue
        try:
            check_template(value)
        except ValueError as exc:
            problems.append((field, value, f"{field!r} is not a valid template: {exc}"))
    for field in action.parameter_fields:
        value = getattr(action, field)
        if not value:
            continue
        try:
            check_parameters(value)
        except ValueError as exc:
            problems.append((field, value, f"{field!r} has invalid values: {exc}"))
    return problems


def check_automation(automation: Automation) -> None:
    """Raise ``ValidationError`` naming every action field whose template is invalid."""
    errors: list[InitErrorDetails] = []
    for section in _ACTION_LISTS:
        for index, action in enumerate(getattr(automation, section)):
            for field, value, message in action_problems(action):
                errors.append(_error((section, index, action.type, field), value, message))
    if errors:
        raise ValidationError.from_exception_data(Automation.__name__, errors)


def validated_automation(document: Mapping[str, Any], **options: Any) -> Automation:
    """An automation validated from a document, its templates checked (see module doc).

    ``options`` go to ``Automation.model_validate`` (e.g. ``context``).
    """
    automation = Automation.model_validate(document, **options)
    check_automation(automation)
    return automation


def check_webhook(spec: WebhookSpec) -> None:
    """Raise ``ValidationError`` (at ``template``) when the webhook's template is invalid."""
    try:
        check_webhook_template(spec.template)
    except ValueError as exc:
        error = _error(("template",), spec.template, str(exc))
        raise ValidationError.from_exception_data(WebhookSpec.__name__, [error]) from None


def validated_webhook(document: Mapping[str, Any]) -> WebhookSpec:
    """A webhook validated from a document, its template checked."""
    spec = WebhookSpec.model_validate(document)
    check_webhook(spec)
    return spec
