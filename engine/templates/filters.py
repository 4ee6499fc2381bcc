"""The filters and globals templates call: Prefect's own (``ui_url``,
``ui_resource_events_url``, ``flow_run_id``, ``tojson`` over views), a bounded ``range``
and ``lipsum``, and the Jinja built-ins whose output grows with an argument, checked first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin
from uuid import UUID

from jinja2 import Undefined, pass_environment, pass_eval_context
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.utils import generate_lorem_ipsum, htmlsafe_json_dumps
from markupsafe import Markup

from marmot.engine.templates.limits import (
    CURRENT_BUDGET,
    MAX_RANGE,
    TemplateFailed,
    check_binop,
    check_bound,
    check_percent_format,
    check_repeat,
    check_size,
    materialise,
    replaced_size,
    tick,
    value_limit,
    weight,
)
from marmot.engine.templates.views import (
    AutomationView,
    EventView,
    ResourceView,
    View,
    api_object_kind,
)

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["TEMPLATE_FILTERS", "TEMPLATE_GLOBALS"]

_MAX_JSON_INDENT = 64

# Prefect's UI routes (prefect.utilities.urls.UI_URL_FORMATS), by resource kind.
_UI_PATHS = {
    "flow": "flows/flow/{}",
    "flow-run": "runs/flow-run/{}",
    "task-run": "runs/task-run/{}",
    "block-document": "blocks/block/{}",
    "work-pool": "work-pools/work-pool/{}",
    "work-queue": "work-queues/work-queue/{}",
    "concurrency-limit": "concurrency-limits/concurrency-limit/{}",
    "deployment": "deployments/deployment/{}",
    "automation": "automations/automation/{}",
}
_EVENTS_URL_KINDS = frozenset({"deployment", "flow", "flow-run", "work-queue", "work-pool"})


def _ui_base() -> str | None:
    budget = CURRENT_BUDGET.get()
    base = budget.ui_url if budget is not None else None
    if not base:
        return None
    return base if base.endswith("/") else f"{base}/"


def _ui_path(value: Any) -> str | None:
    if isinstance(value, EventView):
        day = value.occurred.strftime("%Y-%m-%d")
        return f"events/event/{day}/{quote(str(value.id), safe='')}"
    if isinstance(value, AutomationView):
        return _UI_PATHS["automation"].format(value.id)
    kind: str | None = None
    object_id: Any = None
    if isinstance(value, ResourceView):
        if not value.id.startswith("prefect."):
            return None
        kind = value.id.split(".")[1]
        # Prefect links a work pool by its name, taken from the resource's name label.
        object_id = value.name if kind == "work-pool" else value.id.rpartition(".")[2]
    elif (kind := api_object_kind(value)) is not None:
        object_id = value.get("name") if kind == "work-pool" else value.get("id")
    if kind is None or kind not in _UI_PATHS:
        return None
    if not object_id:
        return ""
    return _UI_PATHS[kind].format(quote(str(object_id), safe=""))


def _ui_url(value: Any) -> str | None:
    """Prefect's ``ui_url`` filter: the object's page in the Prefect UI, or None."""
    base = _ui_base()
    if base is None:
        return None
    path = _ui_path(value)
    if not path:
        return path
    return urljoin(base, path)


def _ui_resource_events_url(value: Any) -> str | None:
    """Prefect's ``ui_resource_events_url`` filter: the UI's event feed for that resource."""
    base = _ui_base()
    resource_id: str | None = None
    if isinstance(value, AutomationView):
        resource_id = f"prefect.automation.{value.id}"
    elif isinstance(value, ResourceView):
        resource_id = value.id
    elif (kind := api_object_kind(value)) in _EVENTS_URL_KINDS:
        resource_id = f"prefect.{kind}.{value.get('id')}"
    if base is None or resource_id is None:
        return None
    return urljoin(base, f"events?resource={quote(resource_id, safe='')}")


_FLOW_RUN_LINK = re.compile(
    r"flow-run/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)


def _flow_run_id(text: str | None) -> str | None:
    """Prefect's ``flow_run_id`` filter: the flow run id in a ``.../flow-run/<id>`` link."""
    if not text:
        return None
    match = _FLOW_RUN_LINK.search(str(text))
    return match.group(1) if match else None


def _json_default(value: Any) -> Any:
    if isinstance(value, View):
        return value._data()
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        # As Prefect's API sends durations (total_run_time...): seconds.
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Markup:
    """Jinja's ``tojson`` (keys sorted, HTML-safe), taking views and models as Prefect does."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    options = dict(eval_ctx.environment.policies["json.dumps_kwargs"])
    if indent is not None:
        if isinstance(indent, int) and indent > _MAX_JSON_INDENT:
            raise TemplateFailed(f"tojson indent is limited to {_MAX_JSON_INDENT}")
        options["indent"] = indent
    return htmlsafe_json_dumps(value, default=_json_default, **options)


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    try:
        count = len(numbers)
    except OverflowError:
        count = MAX_RANGE + 1
    if count > MAX_RANGE:
        raise TemplateFailed(f"range() is limited to {MAX_RANGE} numbers; this one has more")
    return numbers


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > MAX_RANGE or max > MAX_RANGE:
        raise TemplateFailed(f"lipsum() is limited to {MAX_RANGE} paragraphs of {MAX_RANGE} words")
    return generate_lorem_ipsum(n, html, min, max)


# Built-in filters whose output grows with an argument are checked before they run.
def _original(name: str) -> Callable[..., Any]:
    function: Callable[..., Any] = FILTERS[name]
    return function


def _center(value: Any, width: int = 80) -> Any:
    check_size(width, "center() width")
    return _original("center")(value, width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
    check_size(width, "indent() width")
    text = str(s)
    step = len(width) if isinstance(width, str) else width
    if isinstance(step, int):
        check_bound(len(text) + (text.count("\n") + 1) * step)
    return _original("indent")(s, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> Any:
    check_percent_format(str(value), kwargs or args)
    return _original("format")(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
    check_bound(replaced_size(s, str(old), str(new), count))
    return _original("replace")(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Any, d: str = "", attribute: Any = None) -> Any:
    items = materialise(value)
    limit = value_limit()
    check_bound(weight(items, limit) + len(str(d)) * len(items))
    return _original("join")(eval_ctx, items, d, attribute)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    if fill_with is not None:
        check_size(linecount, "batch() size")
        if isinstance(linecount, int):
            check_repeat([fill_with], linecount)
    return _original("batch")(value, linecount, fill_with)


@pass_eval_context
def _slice(eval_ctx: EvalContext, value: Any, slices: int, fill_with: Any = None) -> Any:
    check_size(slices, "slice() count")
    if isinstance(slices, int):
        check_repeat([fill_with], slices)
    return _original("slice")(eval_ctx, value, slices, fill_with)


@pass_environment
def _wordwrap(
    environment: Environment,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> Any:
    separator = environment.newline_sequence if wrapstring is None else str(wrapstring)
    length = len(str(s))
    check_bound(length + (length // 2 + 1) * len(separator))
    return _original("wordwrap")(
        environment, s, width, break_long_words, wrapstring, break_on_hyphens
    )


@pass_eval_context
def _urlize(eval_ctx: EvalContext, value: Any, *args: Any, **kwargs: Any) -> Any:
    extra = sum(len(str(v)) for v in (*args, *kwargs.values()) if isinstance(v, str))
    if extra > 256:
        raise TemplateFailed("urlize() target and rel are limited to 256 characters")
    return _original("urlize")(eval_ctx, value, *args, **kwargs)


@pass_environment
def _sum(environment: Environment, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    # Jinja's sum adds in one C call; adding step by step keeps lists from growing unchecked.
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        tick()
        check_binop("+", total, item)
        total = total + item
    return total


# Jinja's filters and globals this sandbox replaces or adds (the sandbox guards them all).
TEMPLATE_FILTERS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {
        "center": _center,
        "indent": _indent,
        "format": _format,
        "replace": _replace,
        "join": _join,
        "batch": _batch,
        "slice": _slice,
        "wordwrap": _wordwrap,
        "urlize": _urlize,
        "sum": _sum,
        "tojson": _tojson,
        "ui_url": _ui_url,
        "ui_resource_events_url": _ui_resource_events_url,
        "flow_run_id": _flow_run_id,
    }
)
"""Filters the sandbox adds to Jinja's, or puts in place of Jinja's, by name."""

TEMPLATE_GLOBALS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {"range": _bounded_range, "lipsum": _bounded_lipsum}
)
"""Globals the sandbox puts in place of Jinja's, by name."""
