"""Validation problems said plainly: what was wrong, what is accepted, what was meant.

pydantic's messages name the type that failed (``invalid character in hour``
for ``within: 1h``); users need the forms a field takes, and for an unknown
field the one they probably meant. ``explain`` rewrites one pydantic error
dict; ``problems`` does it for a whole ``ValidationError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["explain", "known_fields", "problems"]

_DURATION_TYPES = frozenset(
    {"time_delta_parsing", "time_delta_type", "timedelta_parsing", "timedelta_type"}
)
_DURATION_FORMS = "seconds (600), an ISO 8601 duration (PT10M) or HH:MM:SS (00:10:00)"


def _given(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(error: Mapping[str, Any], fields: Iterable[str] = ()) -> str:
    """The message of one pydantic error, said plainly. ``fields``: the names the
    model at that place accepts, to suggest the closest one for an unknown field."""
    kind = str(error.get("type", ""))
    loc = error.get("loc") or ()
    name = str(loc[-1]) if loc else ""
    if kind in _DURATION_TYPES:
        return f"must be {_DURATION_FORMS}; got {_given(error.get('input'))}"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field {name!r}{hint}"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def known_fields(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names a model accepts at ``loc`` (the top level's when it cannot
    tell), for suggestions."""
    names: set[str] = set(model.model_fields)
    for sub in _models(model):
        names |= set(sub.model_fields)
    return sorted(names)


def _models(
    model: type[BaseModel], seen: set[type[BaseModel]] | None = None
) -> list[type[BaseModel]]:
    """Every model reachable from ``model``'s fields (union members and list items too)."""
    seen = seen if seen is not None else set()
    found: list[type[BaseModel]] = []
    for field in model.model_fields.values():
        for candidate in _annotations(field.annotation):
            if candidate not in seen:
                seen.add(candidate)
                found.append(candidate)
                found.extend(_models(candidate, seen))
    return found


def _annotations(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        out.extend(_annotations(arg))
    metadata = getattr(annotation, "__metadata__", None)
    if metadata is not None:
        out.extend(_annotations(getattr(annotation, "__origin__", None)))
    return out


def problems(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> list[tuple[list[Any], str]]:
    """Every problem of ``exc`` as ``(location, plain message)``, in order."""
    fields = known_fields(model, ()) if model is not None else []
    return [(list(e["loc"]), explain(e, fields)) for e in exc.errors(include_url=False)]
