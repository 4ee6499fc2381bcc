"""``marmot block types [TYPE]``: the block types Marmot sends through and each type's
fields as Prefect names them (type, required or default, secret, what it is for),
read from the block models so the listing cannot drift from what is validated.
"""

from __future__ import annotations

import argparse
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import AnyHttpUrl, Secret, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from marmot.cli.output import json_lines, table
from marmot.engine.errors import ValidationFailed
from marmot.engine.models.blocks import BLOCK_TYPES

__all__ = ["FieldDoc", "field_docs", "run_types", "types_epilog"]

FieldDoc = dict[str, Any]
"""One field's documentation: ``field``, ``type``, ``required``, ``default``,
``secret`` and ``description``."""


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is SecretStr:
        return "string"
    if origin is Secret or (isinstance(annotation, type) and issubclass(annotation, Secret)):
        inner = args[0] if args else getattr(annotation, "__pydantic_generic_metadata__", {})
        if isinstance(inner, dict):
            inner = (inner.get("args") or (Any,))[0]
        return _type_name(inner)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(names)
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if annotation is AnyHttpUrl:
        return "http(s) URL"
    if annotation is Any:
        return "any"
    if annotation is str:
        return "string"
    return getattr(annotation, "__name__", str(annotation))


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr or get_origin(annotation) is Secret:
        return True
    if isinstance(annotation, type) and issubclass(annotation, Secret):
        return True
    return any(_is_secret(a) for a in get_args(annotation))


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return None
    value = info.default
    if value is PydanticUndefined:
        return None
    return value.get_secret_value() if isinstance(value, SecretStr | Secret) else value


def field_docs(block_type: str) -> list[FieldDoc]:
    """Each field of a block type, in declaration order; raises ``ValidationFailed``
    for an unknown type."""
    kind = BLOCK_TYPES.get(block_type)
    if kind is None:
        raise ValidationFailed(
            f"no block type {block_type!r} (types: {', '.join(sorted(BLOCK_TYPES))})"
        )
    docs: list[FieldDoc] = []
    for name, info in kind.model_fields.items():
        if name == "block_type_slug":
            continue
        docs.append(
            {
                "field": name,
                "type": _type_name(info.annotation),
                "required": info.is_required(),
                "default": None if info.is_required() else _default(info),
                "secret": _is_secret(info.annotation),
                "description": info.description or "",
            }
        )
    return docs


def _summary(block_type: str) -> str:
    docs = field_docs(block_type)
    required = [d["field"] for d in docs if d["required"]]
    return f"{block_type}: " + (", ".join(required) if required else "no required fields")


def _what(block_type: str) -> str:
    # The first sentence of the model's docstring says what the type sends to.
    doc = " ".join((BLOCK_TYPES[block_type].__doc__ or "").split())
    first = doc.split(". ")[0]
    return first.split(" (Prefect")[0].split(" (Marmot")[0].split(": ")[0].rstrip(".")


def types_epilog() -> str:
    """The ``block create`` help's closing text: every type with its required fields."""
    lines = ["block types and their required fields (see `marmot block types TYPE`):"]
    lines += [f"  {_summary(slug)}" for slug in sorted(BLOCK_TYPES)]
    return "\n".join(lines)


def run_types(args: argparse.Namespace) -> int:
    """List the block types, or one type's fields."""
    if args.block_type is None:
        slugs = sorted(BLOCK_TYPES)
        if args.json:
            json_lines({"type": s, "fields": [d["field"] for d in field_docs(s)]} for s in slugs)
            return 0
        table(
            f"{len(slugs)} block type(s)",
            ["type", "required fields", "what"],
            (
                (s, ", ".join(d["field"] for d in field_docs(s) if d["required"]), _what(s))
                for s in slugs
            ),
        )
        return 0
    docs = field_docs(args.block_type)
    if args.json:
        json_lines(docs)
        return 0
    table(
        f"{args.block_type} fields (set them with --set FIELD=VALUE)",
        ["field", "type", "required", "default", "secret", "description"],
        (
            (
                d["field"],
                d["type"],
                "yes" if d["required"] else "",
                "" if d["required"] or d["default"] is None else repr(d["default"]),
                "secret" if d["secret"] else "",
                d["description"],
            )
            for d in docs
        ),
    )
    return 0
