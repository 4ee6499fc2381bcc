"""Action and webhook templates as Prefect renders them, in a bounded Jinja sandbox.

The public names live here; ``sandbox`` (the environment and its checks),
``filters``, ``views`` (read-only objects templates see), ``limits`` (time and
size budgets), ``hydration`` (``run-deployment`` parameters), ``rendering`` and
``webhooks`` (a request's template into an event) are the parts behind them.
"""

from __future__ import annotations

from marmot.engine.templates.hydration import (
    PREFECT_KIND,
    check_parameters,
    hydrate_parameters,
    parameter_templates,
)
from marmot.engine.templates.limits import (
    MAX_LOOP_DEPTH,
    MAX_LOOPS,
    MAX_RANGE,
    MAX_TEMPLATE_CHARS,
    TemplateFailed,
)
from marmot.engine.templates.rendering import check_template, render, template_names
from marmot.engine.templates.views import (
    OBJECT_NAMES,
    AutomationView,
    EventView,
    LabelDiver,
    ResourceView,
    TemplateContext,
    build_context,
)

__all__ = [
    "MAX_LOOP_DEPTH",
    "MAX_LOOPS",
    "MAX_RANGE",
    "MAX_TEMPLATE_CHARS",
    "OBJECT_NAMES",
    "PREFECT_KIND",
    "AutomationView",
    "EventView",
    "LabelDiver",
    "ResourceView",
    "TemplateContext",
    "TemplateFailed",
    "build_context",
    "check_parameters",
    "check_template",
    "hydrate_parameters",
    "parameter_templates",
    "render",
    "template_names",
]
