"""The Jinja sandbox templates render in: Jinja's immutable sandbox with Prefect's filters,
rewritten as it parses so loops, literals, ``~`` and output answer to the render's budget,
and the checks Prefect runs on a template's source when an automation is saved.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NoReturn

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    TemplateSyntaxError,
    Undefined,
    nodes,
    pass_eval_context,
)
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from marmot.engine.templates.filters import TEMPLATE_FILTERS, TEMPLATE_GLOBALS
from marmot.engine.templates.limits import (
    CURRENT_BUDGET,
    MAX_LOOP_DEPTH,
    MAX_LOOPS,
    MAX_TEMPLATE_CHARS,
    TemplateFailed,
    check_binop,
    check_call,
    check_str_format,
    check_value,
    tick,
    too_large,
    value_limit,
    weight,
)

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["ENVIRONMENT", "STRICT_ENVIRONMENT", "looks_like_template", "template_problem"]

_CLOCK_READERS = frozenset({"now", "today", "utcnow"})

# Internal filters the AST guard inserts; the spaces keep templates from naming them.
_LOOP = "marmot loop"
_VALUE = "marmot value"
_CONCAT = "marmot concat"


# --- hooks that run inside rendered templates ---------------------------------------------------


def _guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter so it checks the clock and the size of what it returns."""

    @functools.wraps(function)  # keeps Jinja's pass_context/pass_environment marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        tick()
        result = function(*args, **kwargs)
        check_value(result)
        return result

    return guarded


def _loop(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this, so a busy loop still sees the clock."""
    budget = CURRENT_BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.tick()
        yield item


def _value(value: Any) -> Any:
    """Every list, tuple and dict literal passes through this size check."""
    check_value(value)
    return value


@pass_eval_context
def _concat(eval_ctx: EvalContext, parts: list[Any]) -> str:
    """The ``~`` operator, refusing results over the size limit before joining."""
    limit = value_limit()
    if weight(parts, limit) > limit:
        too_large(limit)
    return markup_join(parts) if eval_ctx.autoescape else str_join(parts)


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: Any) -> Any:
    """Every piece of output, literal text included, is counted here before it is kept."""
    if isinstance(value, Undefined):
        return value
    if isinstance(value, str):
        text = value
    else:
        check_value(value)
        if hasattr(value, "__html__"):
            return value
        text = str(value)
    budget = CURRENT_BUDGET.get()
    if budget is not None:
        budget.produce(len(text))
    return text


# --- the sandbox -------------------------------------------------------------------------------


class _Guard(NodeTransformer):
    """Rewrites a parsed template so loops, literals, ``~`` and literal text are checked."""

    def __init__(self, environment: Environment) -> None:
        self._environment = environment

    def _wrap(self, node: nodes.Node, name: str) -> nodes.Filter:
        wrapped = nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)
        wrapped.set_environment(self._environment)
        return wrapped

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = self._wrap(node.iter, _LOOP)
        return node

    def visit_List(self, node: nodes.List) -> nodes.Filter:
        self.generic_visit(node)
        return self._wrap(node, _VALUE)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Filter:
        self.generic_visit(node)
        return self._wrap(node, _VALUE)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Expr:
        self.generic_visit(node)
        return self._wrap(node, _VALUE) if node.ctx == "load" else node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        parts = nodes.List(node.nodes, lineno=node.lineno)
        parts.set_environment(self._environment)
        return self._wrap(parts, _CONCAT)

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        self.generic_visit(node)
        # Literal text becomes a constant expression so it goes through finalize
        # (and is counted); MarkSafeIfAutoescape keeps it unescaped, as literal text is.
        converted: list[nodes.Expr] = []
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                const = nodes.Const(child.data, lineno=child.lineno)
                child = nodes.MarkSafeIfAutoescape(const, lineno=child.lineno)
                child.set_environment(self._environment)
            converted.append(child)
        node.nodes = converted
        return node


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with Prefect's filters and Marmot's time and size limits."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, undefined: type[Undefined] = ChainableUndefined) -> None:
        # optimized=False: no constant folding, so no filter ever runs at compile time.
        super().__init__(
            undefined=undefined,
            autoescape=False,
            finalize=_finalize,
            optimized=False,
        )
        self.globals.update(TEMPLATE_GLOBALS)
        filters = {name: _guarded(f) for name, f in {**self.filters, **TEMPLATE_FILTERS}.items()}
        filters.update({_LOOP: _loop, _VALUE: _value, _CONCAT: _concat})
        self.filters = filters

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        _Guard(self).visit(tree)
        return tree

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # A template reads no clock: renders depend only on their inputs.
        if attr in _CLOCK_READERS and (
            isinstance(obj, date) or (isinstance(obj, type) and issubclass(obj, date))
        ):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        args = check_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        check_value(result)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        tick()
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        sandboxed = super().wrap_str_format(value)
        if sandboxed is None:
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            check_str_format(fmt, args[0] if is_map and args else (args, kwargs))
            return sandboxed(*args, **kwargs)

        return checked

    def get_template(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TemplateFailed("templates cannot include, import or extend other templates")

    def select_template(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TemplateFailed("templates cannot include, import or extend other templates")

    def get_or_select_template(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TemplateFailed("templates cannot include, import or extend other templates")


class _StrictChainableUndefined(ChainableUndefined, StrictUndefined):
    """Undefined that may be walked into (``body.repository.name``, so ``| default``
    can still catch it) but fails when rendered, tested or iterated."""

    __slots__ = ()


ENVIRONMENT = _Sandbox()
"""Action templates, as Prefect renders them: a missing variable renders empty."""
STRICT_ENVIRONMENT = _Sandbox(_StrictChainableUndefined)
"""Webhook templates: a missing variable fails the render, unless the template gives a
``default``: an event made of blanks (``github.unknown``) is worse than none."""


# --- checking a template's source ----------------------------------------------------------------


def looks_like_template(source: str) -> bool:
    """Whether ``source`` is a template at all: holds an expression or a statement."""
    # Prefect renders only strings with an expression or a statement; others pass unchanged.
    return "{{" in source or "{%" in source


def _loop_problem(tree: nodes.Template) -> str | None:
    loops = list(tree.find_all(nodes.For))
    if len(loops) > MAX_LOOPS:
        return (
            f"line {loops[MAX_LOOPS].lineno}: the template has {len(loops)} for loops; "
            f"at most {MAX_LOOPS} are allowed"
        )
    pending: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, nodes.For):
            depth += 1
            if depth > MAX_LOOP_DEPTH:
                return (
                    f"line {node.lineno}: for loops are nested {depth} deep; "
                    f"at most {MAX_LOOP_DEPTH} levels are allowed"
                )
        pending.extend((child, depth) for child in node.iter_child_nodes())
    return None


@lru_cache(maxsize=2048)
def template_problem(source: str) -> str | None:
    """What is wrong with a template's source (too long, a syntax error, too many or too
    deeply nested loops), naming the line when known; None when nothing is."""
    if len(source) > MAX_TEMPLATE_CHARS:
        return (
            f"the template is {len(source)} characters long; "
            f"at most {MAX_TEMPLATE_CHARS} are allowed"
        )
    try:
        tree = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    except RecursionError:
        return "the template is nested too deeply"
    return _loop_problem(tree)
