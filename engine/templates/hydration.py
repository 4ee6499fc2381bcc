"""Prefect's hydration of ``run-deployment`` parameters (and job variables): values tagged
``{"__prefect_kind": ...}`` are rendered (``jinja``), parsed (``json``) or passed through
(``none``), plain string templates are upgraded first, and all of it is checked on save.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from marmot.engine.templates.limits import TemplateFailed
from marmot.engine.templates.sandbox import looks_like_template, template_problem

__all__ = ["PREFECT_KIND", "check_parameters", "hydrate_parameters", "parameter_templates"]

PREFECT_KIND = "__prefect_kind"
"""The key that tags a parameter value with how Prefect hydrates it."""


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


# A value its parent drops (`{"__prefect_kind": "json"}` with no value), and a
# template found while only checking (not rendered).
_REMOVED = _Marker("removed")
_PENDING = _Marker("pending")


def _wrap_plain_template(template: str) -> dict[str, Any]:
    """Prefect's upgrade of a plain string template (``"{{ flow_run.name }}"``).

    A lone ``{{ expression }}`` keeps its type (rendered through ``tojson``,
    then parsed as JSON); anything else renders as a string.
    """
    stripped = template.strip()
    if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
        expression = stripped[2:-2]
        # `{{-` and `-}}` (or `+`) are Jinja's whitespace control, not part of the expression.
        if expression[:1] in ("-", "+"):
            expression = expression[1:]
        if expression[-1:] in ("-", "+"):
            expression = expression[:-1]
        expression = expression.strip()
        return {
            PREFECT_KIND: "json",
            "value": {PREFECT_KIND: "jinja", "template": f"{{{{ ({expression}) | tojson }}}}"},
        }
    return {PREFECT_KIND: "jinja", "template": template}


def _upgrade(value: Any) -> Any:
    if isinstance(value, dict):
        if PREFECT_KIND in value:
            return value
        return {key: _upgrade(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_upgrade(item) for item in value]
    if isinstance(value, str) and looks_like_template(value):
        return _wrap_plain_template(value)
    return value


def _at(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class _Hydrator:
    """Walks parameters: with ``render`` it renders them, without it collects problems."""

    def __init__(self, render: Callable[[str], str] | None) -> None:
        self.render = render
        self.problems: list[str] = []
        self.templates: list[str] = []

    def problem(self, path: str, message: str) -> Any:
        where = path or "value"
        if self.render is not None:
            raise TemplateFailed(f"{where}: {message}")
        self.problems.append(f"{where}: {message}")
        return _PENDING

    def hydrate(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            if PREFECT_KIND in value:
                return self.kind(value, path)
            hydrated = {}
            for key, item in value.items():
                result = self.hydrate(item, _at(path, key))
                if result is not _REMOVED:
                    hydrated[key] = result
            return hydrated
        if isinstance(value, list):
            items = [self.hydrate(item, _at(path, index)) for index, item in enumerate(value)]
            return [item for item in items if item is not _REMOVED]
        return value

    def kind(self, value: dict[str, Any], path: str) -> Any:
        kind = value[PREFECT_KIND]
        if kind == "none":
            if "value" not in value:
                return self.problem(path, f"Missing 'value' key in {PREFECT_KIND} object")
            return self.hydrate(value["value"], path)
        if kind == "json":
            return self.json(value, path)
        if kind == "jinja":
            return self.jinja(value, path)
        if kind == "workspace_variable":
            if "variable_name" not in value:
                return _REMOVED
            if self.render is None:
                return _PENDING
            return self.problem(
                path, f"workspace variables are not supported (variable {value['variable_name']!r})"
            )
        # Prefect passes an unknown kind's "value" through as it is.
        return value.get("value")

    def json(self, value: dict[str, Any], path: str) -> Any:
        if "value" not in value:
            return _REMOVED
        raw = value["value"]
        if isinstance(raw, dict):
            raw = self.hydrate(raw, path)
        if not isinstance(raw, str):
            return raw
        try:
            return json.loads(raw)
        except ValueError as exc:
            return self.problem(path, f"Invalid JSON: {exc}")

    def jinja(self, value: dict[str, Any], path: str) -> Any:
        if "template" not in value:
            return self.problem(path, f"Missing 'template' key in {PREFECT_KIND} object")
        template = value["template"]
        if isinstance(template, dict):
            template = self.hydrate(template, path)
        if isinstance(template, _Marker):
            return template
        if not isinstance(template, str):
            return self.problem(path, "Invalid jinja: the template is not a string")
        problem = template_problem(template)
        if problem is not None:
            return self.problem(path, f"Invalid jinja: {problem}")
        if self.render is None:
            self.templates.append(template)
            return _PENDING
        try:
            return self.render(template)
        except TemplateFailed as exc:
            raise TemplateFailed(f"{path or 'value'}: {exc.message}") from None


def check_parameters(value: Any) -> None:
    """Check ``run-deployment`` parameters (or job variables) as Prefect does on save.

    Plain strings holding ``{{``/``{%`` and ``{"__prefect_kind": "jinja"}``
    values must be valid templates, ``json`` values valid JSON, and ``none`` /
    ``jinja`` values complete. Raises ``ValueError`` naming each bad path.
    """
    hydrator = _Hydrator(None)
    hydrator.hydrate(_upgrade(value), "")
    if hydrator.problems:
        raise ValueError("; ".join(hydrator.problems))


def parameter_templates(value: Any) -> list[str]:
    """Every template the parameters render (so their context can be loaded first)."""
    hydrator = _Hydrator(None)
    hydrator.hydrate(_upgrade(value), "")
    return hydrator.templates


def hydrate_parameters(value: Any, render_template: Callable[[str], str]) -> Any:
    """Parameters as Prefect hydrates them before running a deployment.

    ``jinja`` values are rendered with ``render_template``; ``json`` values are
    parsed; ``none`` values pass their ``value`` through; a plain string
    template is upgraded first (a lone ``{{ expression }}`` keeps its JSON
    type). Raises :class:`TemplateFailed` naming the path of the first failure.
    """
    hydrated = _Hydrator(render_template).hydrate(_upgrade(value), "")
    return {} if hydrated is _REMOVED else hydrated
