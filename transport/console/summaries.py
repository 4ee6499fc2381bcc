"""What the console shows in a line or a few, made from what the RPC returns:
a trigger said in one line, a dry run's verdicts in words, a pasted document
read as YAML or JSON. Pure functions of plain values (no I/O).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

__all__ = [
    "AUTOMATION_EVENT_PREFIX",
    "DocumentError",
    "automation_id_of",
    "duration_s",
    "parse_document",
    "trigger_summary",
    "verdict_lines",
]

# The resource of the events a firing makes: prefect.automation.<id>.
AUTOMATION_EVENT_PREFIX = "prefect.automation."


_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def duration_s(value: Any) -> float:
    """A duration as the RPC dumps it (ISO 8601, ``PT10M``, or seconds) in seconds."""
    try:
        return _DURATION.validate_python(value).total_seconds()
    except ValidationError:
        return 0.0


def _seconds(value: Any) -> str:
    """A duration said shortly: 30s, 10m, 2h."""
    total = duration_s(value)
    if total % 3600 == 0 and total >= 3600:
        return f"{int(total // 3600)}h"
    if total % 60 == 0 and total >= 60:
        return f"{int(total // 60)}m"
    return f"{total:g}s"


def _names(values: Any) -> str:
    items = sorted(values or [])
    if not items:
        return "any event"
    if len(items) > 3:
        return ", ".join(items[:3]) + f" (+{len(items) - 3})"
    return ", ".join(items)


def trigger_summary(trigger: dict[str, Any]) -> str:
    """One line for a trigger: posture, events, threshold within a window, for_each;
    a metric's query; a composite's kind and children."""
    kind = trigger.get("type")
    if kind == "event":
        posture = str(trigger.get("posture", "Reactive"))
        events = _names(trigger.get("expect"))
        threshold = trigger.get("threshold", 1)
        text = f"{posture}: {events}"
        if posture == "Proactive":
            text = f"Proactive: fewer than {threshold} of {events}"
        elif threshold != 1:
            text += f" x{threshold}"
        within = trigger.get("within")
        if within is not None and duration_s(within) > 0:
            text += f" within {_seconds(within)}"
        if trigger.get("after"):
            text += f" after {_names(trigger.get('after'))}"
        each = sorted(trigger.get("for_each") or [])
        if each:
            text += f" for each {', '.join(each)}"
        return text
    if kind == "metric":
        metric = trigger.get("metric") or {}
        return (
            f"Metric: {metric.get('name')} {metric.get('operator')} {metric.get('threshold')} "
            f"over {_seconds(metric.get('range'))} for {_seconds(metric.get('firing_for'))}"
        )
    if kind in ("compound", "sequence"):
        children = trigger.get("triggers") or []
        parts = "; ".join(trigger_summary(c) for c in children[:3])
        more = f"; +{len(children) - 3}" if len(children) > 3 else ""
        head = "Sequence" if kind == "sequence" else f"Compound ({trigger.get('require', 'all')})"
        within = trigger.get("within")
        window = f" within {_seconds(within)}" if within is not None and duration_s(within) else ""
        return f"{head}{window}: {parts}{more}"
    return str(kind)


def automation_id_of(resource_id: str) -> str | None:
    """The automation id of a ``prefect.automation.<id>`` resource, else None."""
    if resource_id.startswith(AUTOMATION_EVENT_PREFIX):
        rest = resource_id[len(AUTOMATION_EVENT_PREFIX) :]
        return rest if len(rest) == 36 else None
    return None


_MARK = {True: "yes", False: "no"}


def verdict_lines(report: dict[str, Any]) -> list[str]:
    """An ``automations.test`` report in lines: per event whether it fires, then per
    trigger the name test, each label of ``match`` and the outcome, in words."""
    lines: list[str] = []
    for verdict in report.get("events") or []:
        fires = "fires" if verdict.get("fires") else "does not fire"
        lines.append(f"{verdict.get('event')}: {fires} ({verdict.get('summary', '')})")
        for leaf in verdict.get("triggers") or []:
            path = leaf.get("path") or "trigger"
            name = leaf.get("name") or {}
            patterns = ", ".join(c["pattern"] for c in name.get("expect") or []) or "any"
            lines.append(
                f"  {path}: name in expect [{patterns}]: {_MARK[bool(name.get('expected'))]}"
            )
            for label in leaf.get("match") or []:
                wanted = ", ".join(c["pattern"] for c in label.get("patterns") or [])
                lines.append(
                    f"  {path}: {label.get('label')} = {label.get('value')!r} "
                    f"matches [{wanted}]: {_MARK[bool(label.get('ok'))]}"
                )
            for related in leaf.get("match_related") or []:
                lines.append(
                    f"  {path}: related resource #{related.get('spec')}: "
                    f"{_MARK[bool(related.get('ok'))]}"
                )
            lines.append(f"  {path}: {leaf.get('outcome')}: {leaf.get('reason', '')}")
        for composite in verdict.get("composites") or []:
            lines.append(
                f"  {composite.get('path') or 'trigger'} ({composite.get('type')}): "
                f"{composite.get('reason', '')}"
            )
    return lines


class DocumentError(ValueError):
    """Raised when pasted text is not one YAML or JSON mapping; ``line`` is 1-based."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def parse_document(text: str) -> dict[str, Any]:
    """A pasted automation (or block, or event): JSON or YAML, one mapping. Raises
    ``DocumentError`` with the line of a syntax error."""
    if not text.strip():
        raise DocumentError("the document is empty")
    try:
        value = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"not valid JSON: {exc.msg}", exc.lineno) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise DocumentError(f"not valid YAML: {problem}", line) from None
    if not isinstance(value, dict):
        raise DocumentError("the document must be a mapping (key: value), not a list or a value")
    return value
