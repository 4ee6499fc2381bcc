"""Reading user files: automation YAML/JSON and JSON-lines event files.

Errors name the file, the line and the field, so a user can go straight to
the mistake. Automation files may hold one automation, a list of them, or
``automations: [...]`` (Prefect's layout); each may be YAML or JSON.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from marmot.engine.errors import ValidationFailed
from marmot.engine.models.actions import ACTION_TYPES
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event, EventLimits
from marmot.problems import problems
from marmot.transport.event_decoder import fast_event_line


class DocumentError(ValidationFailed):
    """Raised when a file does not parse or validate; names file, line and field."""

    def __init__(self, path: str, line: int | None, message: str, field: str = "") -> None:
        where = f"{path}:{line}" if line is not None else path
        text = f"{where}: {field + ': ' if field else ''}{message}"
        super().__init__(text, details={"file": path, "line": line, "field": field})
        self.path, self.line, self.field = path, line, field

    def add(self, other: DocumentError) -> None:
        """List another problem of the same file after this one (a line each)."""
        self.message = f"{self.message}\n{other.message}"
        self.args = (self.message,)


def field_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def node_line(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if getattr(key, "value", None) == part:
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(str(path), None, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise DocumentError(str(path), None, f"not UTF-8 text ({exc.reason})") from exc


def read_documents(path: Path) -> Iterator[tuple[Any, yaml.Node | None]]:
    text = _read_text(path)
    # A JSON file is read as JSON (PyYAML would split an escaped surrogate pair,
    # the way json.dumps writes an emoji, into two lone surrogates); the YAML
    # node tree, when there is one, still gives line numbers.
    try:
        as_json: Any = json.loads(text)
    except (ValueError, RecursionError):
        as_json = _NOT_JSON
    try:
        found = _yaml_documents(text)
    except _Unreadable as exc:
        if as_json is _NOT_JSON:
            raise DocumentError(str(path), exc.line, exc.reason) from exc
        found = [(as_json, None)]
    if as_json is not _NOT_JSON:
        found = [(as_json, found[0][1] if len(found) == 1 else None)]
    yield from found


_NOT_JSON = object()


class _Unreadable(Exception):
    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(reason)
        self.line, self.reason = line, reason


# libyaml's parser when PyYAML was built with it (about ten times faster: a fleet's
# file of 10,000 automations), else PyYAML's own; both give the same documents
# and line numbers.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_documents(text: str) -> list[tuple[Any, yaml.Node | None]]:
    """Every YAML document of ``text`` with its node tree (one parse, for line numbers)."""
    found: list[tuple[Any, yaml.Node | None]] = []
    loader: Any = None
    try:
        loader = _LOADER(text)
        while loader.check_node():
            node = loader.get_node()
            found.append((loader.construct_document(node), node))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise _Unreadable(line, f"not valid YAML or JSON: {exc}") from exc
    except RecursionError as exc:
        raise _Unreadable(None, "nested too deeply to read") from exc
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise _Unreadable(None, f"not valid YAML or JSON: {exc}") from exc
    finally:
        if loader is not None:
            loader.dispose()
    return found


def document_entries(
    data: Any, node: yaml.Node | None, plural: str, own_field: str
) -> Iterator[tuple[Any, Any, list[Any]]]:
    """Yield (document, node, loc prefix) for each item of a parsed file that holds
    one item, a list of them, or ``{plural: [...]}`` (a mapping without the item's
    ``own_field``, e.g. ``automations`` without ``trigger``)."""
    if isinstance(data, dict) and plural in data and own_field not in data:
        items, prefix = data[plural], [plural]
        if not isinstance(items, list):
            yield items, node, prefix
            return
    elif isinstance(data, list):
        items, prefix = data, []
    else:
        yield data, node, []
        return
    for index, item in enumerate(items):
        yield item, node, [*prefix, index]


def load_automations(path: str | Path) -> list[Automation]:
    """Every automation in a YAML or JSON file; raises ``DocumentError``."""
    # Here, not at the top: it brings in Jinja, which commands that only name
    # this module's errors (`marmot automation ls` among them) need not load.
    from marmot.engine.templates.checks import validated_automation

    file = Path(path)
    found: list[Automation] = []
    for data, node in read_documents(file):
        if data is None:
            continue
        for document, root, prefix in document_entries(data, node, "automations", "trigger"):
            if not isinstance(document, dict):
                line = node_line(root, prefix)
                raise DocumentError(str(file), line, "expected an automation (a mapping)")
            try:
                found.append(validated_automation(document))
            except ValidationError as exc:
                raise _from_validation(str(file), exc, root, prefix) from exc
    if not found:
        raise DocumentError(str(file), None, "no automation found in the file")
    return found


def _from_validation(
    path: str, exc: ValidationError, root: yaml.Node | None, prefix: list[Any]
) -> DocumentError:
    """Every problem of ``exc``, each as ``file:line: field: reason`` on its own line."""
    lines: list[tuple[int | None, str, str]] = []
    for loc, message in problems(exc, Automation):
        fields = drop_union_tags(loc)
        lines.append((node_line(root, [*prefix, *fields]), field_path(fields), message))
    line, field, message = lines[0]
    error = DocumentError(path, line, message, field)
    for more_line, more_field, more_message in lines[1:]:
        error.add(DocumentError(path, more_line, more_message, more_field))
    error.details["errors"] = [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors(include_url=False)
    ]
    return error


_UNION_TAGS = frozenset({"event", "compound", "sequence", *ACTION_TYPES})
# Tags that are also field names (a metric trigger's `metric`): a tag only
# where a union member starts, right after `trigger` or a list index.
_FIELD_LIKE_TAGS = frozenset({"metric"})


def is_union_tag(part: int | str) -> bool:
    # pydantic names the chosen union member in the location (e.g. "event",
    # "call-webhook"); a user thinks in field names, so drop those parts.
    return isinstance(part, str) and part in _UNION_TAGS


def drop_union_tags(loc: Sequence[int | str]) -> list[int | str]:
    """A pydantic error location without the union members' tags: field names only."""
    kept: list[int | str] = []
    for index, part in enumerate(loc):
        if is_union_tag(part):
            continue
        if part in _FIELD_LIKE_TAGS and (
            index == 0 or loc[index - 1] == "trigger" or isinstance(loc[index - 1], int)
        ):
            continue
        kept.append(part)
    return kept


def read_events(path: str | Path, *, limits: EventLimits | None = None) -> list[Event]:
    """Events from a JSON-lines file, one per line (blank lines skipped)."""
    file = Path(path)
    edge = limits or EventLimits()
    context = {"limits": edge}
    events: list[Event] = []
    # Events are kept, not garbage: pausing the cyclic collector while loading
    # a large file more than doubles the rate (bench/engine.py).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for number, line in enumerate(_read_text(file).splitlines(), start=1):
            if not line.strip():
                continue
            # Plainly valid lines are made the fast way; the model judges the rest.
            event = fast_event_line(line.encode("utf-8", "surrogatepass"), edge)
            if event is not None:
                events.append(event)
                continue
            try:
                events.append(Event.model_validate_json(line, context=context))
            except ValidationError as exc:
                raise _line_error(str(file), number, exc) from exc
    finally:
        if collecting:
            gc.enable()
    return events


def _line_error(path: str, number: int, exc: ValidationError) -> DocumentError:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return DocumentError(path, number, f"not valid JSON: {first['msg']}")
    return DocumentError(path, number, first["msg"], field_path(first["loc"]))


def parse_event_line(line: str) -> dict[str, Any]:
    """One JSON object from a line (for ``marmot emit -f``); raises ``ValueError``."""
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value
