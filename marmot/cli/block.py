"""``marmot block create|types|ls|show|delete``: notification blocks, secrets never printed.

Block files are YAML or JSON: one block, a list, or ``blocks: [...]``; each
block is ``{block_type_slug, name, data, id?}``, or a block document exported
from Prefect (with ``block_type.slug``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from pydantic import ValidationError

from marmot.cli.block_types import run_types, types_epilog
from marmot.cli.connect import client_options, connect
from marmot.cli.output import json_lines, table
from marmot.documents import DocumentError
from marmot.engine.errors import MarmotError, ValidationFailed
from marmot.engine.models.blocks import BLOCK_TYPES, BlockDocument, block_from_prefect
from marmot.transport.client import Client


def register(commands: Any) -> None:
    """Add the ``block`` command group."""
    group = commands.add_parser("block", help="manage notification blocks")
    sub = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    common = client_options()

    create = sub.add_parser(
        "create",
        parents=[common],
        help="create blocks from YAML/JSON files, or one from --type/--name/--set",
        epilog=types_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("-f", "--file", dest="files", action="append", default=[])
    create.add_argument("--type", dest="block_type", choices=sorted(BLOCK_TYPES))
    create.add_argument("--name")
    create.add_argument(
        "--set",
        dest="fields",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a data field (JSON values are parsed; FIELD.KEY sets one key of a mapping)",
    )
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=run_create)

    kinds = sub.add_parser(
        "types", help="list the block types, or one type's fields (no daemon needed)"
    )
    kinds.add_argument("block_type", nargs="?", choices=sorted(BLOCK_TYPES), metavar="TYPE")
    kinds.add_argument("--json", action="store_true")
    kinds.set_defaults(handler=run_types)

    ls = sub.add_parser("ls", parents=[common], help="list blocks")
    ls.add_argument("--type", dest="block_type", choices=sorted(BLOCK_TYPES))
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_ls)

    for verb, text, handler in [
        ("show", "show one block (secrets masked)", run_show),
        ("delete", "delete a block", run_delete),
    ]:
        p = sub.add_parser(verb, parents=[common], help=text)
        p.add_argument("block", help="block id or TYPE/NAME")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)


# -- reading blocks from files and options ---------------------------------------------


def load_blocks(path: str | Path) -> list[BlockDocument]:
    """Every block in a YAML or JSON file; raises ``DocumentError``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        documents = list(yaml.safe_load_all(text))
    except OSError as exc:
        raise DocumentError(str(file), None, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise DocumentError(str(file), None, f"not UTF-8 text ({exc.reason})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise DocumentError(str(file), line, f"not valid YAML or JSON: {exc}") from exc
    found: list[BlockDocument] = []
    for where, entry in _entries(documents):
        if not isinstance(entry, dict):
            raise DocumentError(str(file), None, "expected a block (a mapping)", where)
        found.append(_parse(str(file), where, entry))
    if not found:
        raise DocumentError(str(file), None, "no block found in the file")
    return found


def _entries(documents: list[Any]) -> Iterator[tuple[str, Any]]:
    for document in documents:
        if document is None:
            continue
        if isinstance(document, dict) and "blocks" in document and "data" not in document:
            items, prefix = document["blocks"], "blocks"
        elif isinstance(document, list):
            items, prefix = document, ""
        else:
            yield "", document
            continue
        if not isinstance(items, list):
            yield prefix, items
            continue
        for index, item in enumerate(items):
            yield f"{prefix}[{index}]", item


def _parse(path: str, where: str, entry: dict[str, Any]) -> BlockDocument:
    # A Prefect export names its type as block_type.slug; Marmot's own files
    # use block_type_slug.
    if isinstance(entry.get("block_type"), dict):
        try:
            return block_from_prefect(entry)
        except MarmotError as exc:
            raise DocumentError(path, None, exc.message, where) from exc
    try:
        return BlockDocument.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = [str(p) for p in first["loc"] if p not in BLOCK_TYPES]
        field = ".".join([where, *loc] if where else loc)
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise DocumentError(path, None, f"{first['msg']}{more}", field) from exc


def block_from_options(block_type: str, name: str, fields: list[str]) -> BlockDocument:
    """One block from ``--type``, ``--name`` and ``--set FIELD=VALUE`` options."""
    data: dict[str, Any] = {}
    for item in fields:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValidationFailed(f"--set expects FIELD=VALUE, got {item!r}")
        if "." in key:
            # A key of a mapping (a header, say): always a string.
            outer, inner = key.split(".", 1)
            nested = data.setdefault(outer, {})
            if not isinstance(nested, dict):
                raise ValidationFailed(f"--set {outer} is not a mapping")
            nested[inner] = raw
            continue
        try:
            data[key] = json.loads(raw)
        except ValueError:
            data[key] = raw
    try:
        return BlockDocument.model_validate(
            {"block_type_slug": block_type, "name": name, "data": data}
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"] if p not in BLOCK_TYPES)
        raise ValidationFailed(f"{loc}: {first['msg']}") from exc


def _resolve(client: Client, ref: str) -> BlockDocument:
    try:
        return client.read_block(UUID(ref))
    except ValueError:
        pass
    block_type, sep, name = ref.partition("/")
    if not sep or block_type not in BLOCK_TYPES or not name:
        raise ValidationFailed(
            f"{ref!r} is neither a block id nor TYPE/NAME (types: {', '.join(sorted(BLOCK_TYPES))})"
        )
    return client.read_block_by_name(block_type, name)


# -- commands ----------------------------------------------------------------------


def _print(blocks: list[BlockDocument], as_json: bool, title: str) -> None:
    if as_json:
        json_lines(b.public_view() for b in blocks)
        return
    table(
        title,
        ["id", "type", "name", "updated"],
        ([b.id, b.block_type_slug, b.name, b.updated and b.updated.isoformat()] for b in blocks),
    )


def run_create(args: argparse.Namespace) -> int:
    from_options = args.block_type or args.name or args.fields
    if args.files and from_options:
        raise ValidationFailed("give either -f FILE or --type/--name/--set, not both")
    if args.files:
        blocks = [b for path in args.files for b in load_blocks(path)]
    elif args.block_type and args.name:
        blocks = [block_from_options(args.block_type, args.name, args.fields)]
    else:
        raise ValidationFailed("give -f FILE, or --type and --name (with --set FIELD=VALUE)")
    created = []
    with connect(args) as client:
        for block in blocks:
            created.append(client.create_block(block))
    _print(created, args.json, f"created {len(created)} block(s)")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.list_blocks(args.block_type)
    if args.json:
        json_lines(rows)
        return 0
    table(
        f"{len(rows)} block(s)",
        ["id", "type", "name", "updated"],
        ([r["id"], r["block_type_slug"], r["name"], r["updated"]] for r in rows),
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        block = _resolve(client, args.block)
    view = block.public_view()
    print(json.dumps(view, indent=None if args.json else 2, sort_keys=not args.json))
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        block = _resolve(client, args.block)
        client.delete_block(block.id)
    if args.json:
        json_lines([{"deleted": str(block.id), "name": block.name, "type": block.block_type_slug}])
    else:
        print(f"deleted {block.describe()} ({block.id})")
    return 0
