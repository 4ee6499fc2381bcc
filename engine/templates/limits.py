"""The limits on one template render: Prefect's loop and range limits, Marmot's limits on
source, output and time, the budget a render spends, and the checks that refuse an
operation before it builds a value too large (``'a' * 10**9``, ``9**9**9``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn

from marmot.engine.errors import MarmotError
from marmot.engine.templates.views import View

__all__ = [
    "MAX_LOOP_DEPTH",
    "MAX_LOOPS",
    "MAX_RANGE",
    "MAX_TEMPLATE_CHARS",
    "TemplateFailed",
    # the budget of the render in progress
    "CURRENT_BUDGET",
    "Budget",
    "tick",
    "value_limit",
    # size checks, for the sandbox and its filters
    "check_binop",
    "check_bound",
    "check_call",
    "check_percent_format",
    "check_repeat",
    "check_size",
    "check_str_format",
    "check_value",
    "materialise",
    "replaced_size",
    "too_large",
    "weight",
]

# Prefect's limits on user templates (prefect.server.utilities.user_templates).
MAX_LOOPS = 10
"""At most this many ``{% for %}`` loops in one template."""
MAX_LOOP_DEPTH = 2
"""Loops may nest at most this deep."""
MAX_RANGE = 100
"""``range()`` in a template yields at most this many numbers."""

MAX_TEMPLATE_CHARS = 65_536
"""Marmot's own limit on a template's source (Prefect sets none)."""


# Any value a template builds (string, list, ...) may be at most this large,
# or the output limit if that is larger. Prefect's largest event is 1.5 MB,
# so parts of a real payload stay usable; `'a' * 10**9` does not.
_MIN_VALUE_LIMIT = 1 << 20
# Text produced inside macros, filter blocks and `{% set %}` blocks is held in
# memory before it is output; all text produced counts against this multiple.
_WORK_FACTOR = 4
_MAX_INT_BITS = 16_384


class TemplateFailed(MarmotError):
    """Raised when a template does not render: an error in it, or a limit it broke."""

    code = "template_failed"


# --- the budget of one render -------------------------------------------------------------


@dataclass(slots=True)
class Budget:
    """What the render in progress may still spend: time, value sizes, text produced."""

    now: Callable[[], float]
    deadline: float
    timeout_s: float
    value_limit: int
    work_limit: int
    ui_url: str | None
    produced: int = 0

    def tick(self) -> None:
        """Raise :class:`TemplateFailed` once the render is past its deadline."""
        if self.now() > self.deadline:
            raise TemplateFailed(f"rendering took longer than {self.timeout_s:g} s")

    def produce(self, size: int) -> None:
        """Count ``size`` more characters of text produced; raise :class:`TemplateFailed`
        past the limit or the deadline."""
        self.produced += size
        if self.produced > self.work_limit:
            raise TemplateFailed(
                f"the template produced more than {self.work_limit} bytes of text "
                "(counting text built inside macros, blocks and filters)"
            )
        self.tick()

    @classmethod
    def for_render(
        cls, *, max_bytes: int, deadline_s: float, now: Callable[[], float], ui_url: str | None
    ) -> Budget:
        """The budget of a render starting now: ``deadline_s`` seconds on ``now`` and values
        and text sized from ``max_bytes``, the limit on its output."""
        limit = max(max_bytes, _MIN_VALUE_LIMIT)
        return cls(
            now=now,
            deadline=now() + deadline_s,
            timeout_s=deadline_s,
            value_limit=limit,
            work_limit=limit * _WORK_FACTOR,
            ui_url=ui_url,
        )


# Set by `render` for the duration of one render. The sandbox hooks run inside
# Jinja's generated code, which has no way to hand them the budget directly.
CURRENT_BUDGET: ContextVar[Budget | None] = ContextVar("marmot_template_budget", default=None)


def tick() -> None:
    """Raise :class:`TemplateFailed` if the render in progress is past its deadline."""
    budget = CURRENT_BUDGET.get()
    if budget is not None:
        budget.tick()


def value_limit() -> int:
    """The largest value (in printed characters) the render in progress may build."""
    budget = CURRENT_BUDGET.get()
    return budget.value_limit if budget is not None else _MIN_VALUE_LIMIT


# --- size guards ----------------------------------------------------------------------------

_END = object()


def _own_weight(item: object) -> tuple[int, Iterable[object] | None]:
    """An object's own printed size, and its parts if it is a container."""
    if isinstance(item, str | bytes | bytearray):
        return len(item), None
    if isinstance(item, View):
        return 1, (item._data(),)
    if isinstance(item, Mapping):
        return 2 + 4 * len(item), (*item.keys(), *item.values())
    if isinstance(item, list | tuple | set | frozenset):
        return 2 + 2 * len(item), item
    if isinstance(item, bool) or item is None:
        return 5, None
    if isinstance(item, int):
        return item.bit_length() // 3 + 1, None
    return 8, None


def weight(value: object, limit: int) -> int:
    """Roughly how many characters ``value`` prints as; stops counting once over ``limit``.

    A part shared many times counts every time, as it prints every time, but is
    measured once, so ``[x, x]`` nested twenty deep costs twenty steps, not 2**20.
    """
    own, parts = _own_weight(value)
    if parts is None or own > limit:
        return own
    measured: dict[int, int] = {}
    alive: list[object] = []  # keeps measured parts alive, so their ids stay theirs
    # Each frame: the container, its remaining parts, and its size so far.
    frames: list[tuple[object, Iterator[object], int]] = [(value, iter(parts), own)]
    open_ids = {id(value)}
    steps = 0
    while frames:
        container, remaining, total = frames[-1]
        part = next(remaining, _END)
        if part is _END:
            frames.pop()
            open_ids.discard(id(container))
            measured[id(container)] = total
            if not frames:
                return total
            parent, parent_remaining, parent_total = frames[-1]
            frames[-1] = (parent, parent_remaining, parent_total + total)
            if parent_total + total > limit:
                return parent_total + total
            continue
        steps += 1
        if not steps % 1024:
            tick()
        size = measured.get(id(part))
        if size is None:
            if id(part) in open_ids:
                return limit + 1  # a container inside itself prints forever
            own, parts = _own_weight(part)
            if parts is not None and own <= limit:
                alive.append(part)
                frames.append((part, iter(parts), own))
                open_ids.add(id(part))
                continue
            size = own
        total += size
        frames[-1] = (container, remaining, total)
        if total > limit:
            return total
    return 0  # pragma: no cover - the loop returns when the outermost frame closes


def too_large(limit: int) -> NoReturn:
    """Raise :class:`TemplateFailed` for a value over ``limit``."""
    raise TemplateFailed(f"the template would build a value larger than {limit} bytes")


def check_value(value: object) -> None:
    """Raise :class:`TemplateFailed` if ``value`` prints larger than the value limit."""
    limit = value_limit()
    if weight(value, limit) > limit:
        too_large(limit)


def check_size(size: object, what: str) -> None:
    """Raise :class:`TemplateFailed` if the size argument ``what`` is over the value limit."""
    limit = value_limit()
    if isinstance(size, int) and size > limit:
        raise TemplateFailed(f"{what} {size} is larger than the {limit} allowed")


def check_bound(bound: int) -> None:
    """Raise :class:`TemplateFailed` if a result of ``bound`` characters is over the limit."""
    limit = value_limit()
    if bound > limit:
        too_large(limit)


def _number(digits: str) -> int:
    # int() refuses strings of more than 4300 digits; anything that long is too large anyway.
    return int(digits) if len(digits) < 12 else 1 << 62


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)", re.S)


def check_percent_format(fmt: str, args: object) -> None:
    """Refuse ``fmt % args`` (and the ``format`` filter) when the result could be huge."""
    specs = 0
    widest = 0
    for match in _PERCENT_SPEC.finditer(fmt):
        if match.group(3) == "%":
            continue
        specs += 1
        for number in match.group(1, 2):
            if number == "*":
                raise TemplateFailed("'*' widths are not allowed in %-formatting")
            if number:
                widest = max(widest, _number(number))
    if specs:
        limit = value_limit()
        check_bound(len(fmt) + specs * (widest + weight(args, limit)))


_FORMAT_NUMBER = re.compile(r"\d+")


def check_str_format(fmt: str, args: object) -> None:
    """Refuse ``fmt.format(...)`` when the result could be huge."""
    fields = 0
    widest = 0
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None:
            continue
        fields += 1
        if spec and "{" in spec:
            raise TemplateFailed("nested fields in a format spec are not allowed")
        for number in _FORMAT_NUMBER.findall(spec or ""):
            widest = max(widest, _number(number))
    if fields:
        limit = value_limit()
        check_bound(len(fmt) + fields * (widest + weight(args, limit)))


def check_repeat(sequence: object, times: int) -> None:
    """Refuse ``sequence * times`` when the result would be over the value limit."""
    if times <= 0:
        return
    limit = value_limit()
    if isinstance(sequence, str | bytes):
        check_bound(len(sequence) * times)
    else:
        check_bound(max(weight(sequence, limit), 1) * times)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an arithmetic operator whose result would be huge (``'a' * 10**9``, ``9**9**9``)."""
    sequences = (str, bytes, list, tuple)
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise TemplateFailed(f"the template would build a number over {_MAX_INT_BITS} bits")
        elif isinstance(left, sequences) and isinstance(right, int):
            check_repeat(left, right)
        elif isinstance(left, int) and isinstance(right, sequences):
            check_repeat(right, left)
    elif operator == "+":
        if isinstance(left, sequences) and isinstance(right, sequences):
            limit = value_limit()
            check_bound(weight(left, limit) + weight(right, limit))
    elif operator == "**":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and abs(left) > 1
            and left.bit_length() * right > _MAX_INT_BITS
        ):
            raise TemplateFailed(f"the template would build a number over {_MAX_INT_BITS} bits")
    elif operator == "%" and isinstance(left, str | bytes):
        fmt = left if isinstance(left, str) else left.decode("latin-1")
        check_percent_format(fmt, right)


def materialise(items: Any) -> list[Any]:
    """``items`` as a list, refusing more than the value limit and watching the clock."""
    limit = value_limit()
    collected: list[Any] = []
    for item in items:
        tick()
        collected.append(item)
        if len(collected) > limit:
            too_large(limit)
    return collected


def check_call(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call that would allocate a huge result; return the arguments to use."""
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__name__", "")
    if isinstance(owner, str | bytes | bytearray):
        if name in ("center", "ljust", "rjust", "zfill") and args:
            check_size(args[0], f"{name}() width")
        elif name == "expandtabs":
            tabsize = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(tabsize, int):
                tab = "\t" if isinstance(owner, str) else b"\t"
                check_bound(len(owner) + owner.count(tab) * tabsize)  # type: ignore[arg-type]
        elif name == "replace" and len(args) >= 2:
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            check_bound(replaced_size(owner, args[0], args[1], count))
        elif name == "join" and args:
            items = materialise(args[0])
            limit = value_limit()
            check_bound(weight(items, limit) + len(owner) * len(items))
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            limit = value_limit()
            widest = max((weight(v, limit) for v in args[0].values()), default=1)
            check_bound(len(owner) * max(widest, 1))
    elif isinstance(owner, int) and name == "to_bytes":
        check_size(args[0] if args else kwargs.get("length", 1), "to_bytes() length")
    return args


def replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """The length of ``text`` after replacing ``old`` with ``new`` (at most ``count`` times)."""
    if not isinstance(text, str | bytes | bytearray):
        text = str(text)
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    occurrences = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(len(new) - len(old), 0)
