"""``marmot webhook create|ls|inspect|update|enable|disable|rotate|delete``: incoming webhooks.

Webhook files are YAML or JSON: one webhook, a list, or ``webhooks: [...]``;
each webhook is ``{name, template, description?, enabled?}``, where
``template`` is a Jinja string rendering to a JSON event, or a mapping (that
JSON, with Jinja in its strings). Marmot picks each webhook's URL.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import ValidationError
from rich.markup import escape

from marmot.cli.connect import client_options, connect
from marmot.cli.output import fail, json_lines, line
from marmot.documents import (
    DocumentError,
    document_entries,
    field_path,
    node_line,
    read_documents,
)
from marmot.engine.errors import ValidationFailed
from marmot.engine.models.webhooks import WebhookSpec
from marmot.engine.templates.checks import validated_webhook
from marmot.transport.client import Client


def register(commands: Any) -> None:
    """Add the ``webhook`` command group."""
    group = commands.add_parser("webhook", help="manage incoming webhooks")
    sub = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    common = client_options()

    create = sub.add_parser(
        "create",
        parents=[common],
        help="create a webhook (NAME --template ...), or webhooks from YAML/JSON files",
    )
    create.add_argument("name", nargs="?", help="the new webhook's name")
    _field_options(create)
    create.add_argument(
        "--disabled", action="store_true", help="create it disabled (its URL answers 404)"
    )
    create.add_argument("-f", "--file", dest="files", action="append", default=[])
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=run_create)

    update = sub.add_parser(
        "update",
        parents=[common],
        help="change a webhook's fields, or replace webhooks (matched by name) from files",
    )
    update.add_argument("webhook", nargs="?", help="webhook id or name")
    update.add_argument("--name", help="a new name")
    _field_options(update)
    update.add_argument("-f", "--file", dest="files", action="append", default=[])
    update.add_argument("--json", action="store_true")
    update.set_defaults(handler=run_update)

    ls = sub.add_parser("ls", parents=[common], help="list webhooks and their URLs")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_ls)

    for verb, text, handler in [
        ("inspect", "show one webhook, with its URL and template", run_inspect),
        ("url", "print a webhook's URL alone (for curl and scripts)", run_url),
        ("enable", "enable a webhook (its URL takes requests)", run_enable),
        ("disable", "disable a webhook (its URL answers 404)", run_disable),
        ("rotate", "give a webhook a new URL (the old one stops working)", run_rotate),
        ("delete", "delete a webhook", run_delete),
    ]:
        p = sub.add_parser(verb, parents=[common], help=text)
        p.add_argument("webhook", help="webhook id or name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)


def _field_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--template",
        help="a Jinja template rendering to a JSON event, or @FILE to read it from a file",
    )
    parser.add_argument("--description")


# -- reading webhooks from files and options ------------------------------------------


def load_webhooks(path: str | Path) -> list[WebhookSpec]:
    """Every webhook in a YAML or JSON file; raises ``DocumentError`` naming the file,
    the line and the field of the first problem."""
    file = Path(path)
    found: list[WebhookSpec] = []
    for data, node in read_documents(file):
        if data is None:
            continue
        for entry, root, prefix in document_entries(data, node, "webhooks", "template"):
            if not isinstance(entry, dict):
                raise DocumentError(
                    str(file), node_line(root, prefix), "expected a webhook (a mapping)"
                )
            try:
                found.append(validated_webhook(entry))
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                loc = [*prefix, *first["loc"]]
                message = first["msg"].removeprefix("Value error, ")
                line_no = node_line(root, loc)
                raise DocumentError(str(file), line_no, message, field_path(loc)) from exc
    if not found:
        raise DocumentError(str(file), None, "no webhook found in the file")
    return found


def _template(value: str | None) -> str | None:
    """``--template``: the text itself, or the contents of the file after ``@``."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"--template {value}: cannot read {path}: {exc}") from exc


def _spec(**fields: Any) -> WebhookSpec:
    try:
        return validated_webhook(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValidationFailed(f"{where}: {first['msg'].removeprefix('Value error, ')}") from exc


def _resolve(client: Client, ref: str) -> dict[str, Any]:
    try:
        return client.read_webhook(UUID(ref))
    except ValueError:
        return client.read_webhook_by_name(ref)


# -- commands ----------------------------------------------------------------------


def _print(webhooks: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        json_lines(webhooks)
        return
    # One line per webhook, never wrapped: a URL must survive copy and paste.
    line(escape(title))
    width = max((len(w["name"]) for w in webhooks), default=0)
    for w in webhooks:
        state = "enabled " if w["enabled"] else "disabled"
        where = w["url"] or "(no HTTP server)"
        line(escape(f"  {w['name']:<{width}}  {state}  {where}"))


def _print_one(webhook: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        json_lines([webhook])
        return
    line(f"{what} webhook [bold]{escape(webhook['name'])}[/] ({webhook['id']})")
    state = "enabled" if webhook["enabled"] else "disabled (its URL answers 404)"
    line(escape(f"{state}: {webhook['url'] or '(the daemon serves no HTTP)'}"))


def run_create(args: argparse.Namespace) -> int:
    from_options = args.name or args.template or args.description or args.disabled
    if args.files and from_options:
        raise ValidationFailed("give either -f FILE or NAME --template ..., not both")
    if args.files:
        specs = [spec for path in args.files for spec in load_webhooks(path)]
    elif args.name and args.template:
        specs = [
            _spec(
                name=args.name,
                template=_template(args.template),
                description=args.description or "",
                enabled=not args.disabled,
            )
        ]
    else:
        raise ValidationFailed("give NAME and --template TEMPLATE, or -f FILE")
    created = []
    with connect(args) as client:
        for spec in specs:
            created.append(
                client.create_webhook(
                    spec.name, spec.template, description=spec.description, enabled=spec.enabled
                )
            )
    _print(created, args.json, f"created {len(created)} webhook(s)")
    return 0


def run_update(args: argparse.Namespace) -> int:
    template = _template(args.template)
    from_options = args.name or template is not None or args.description is not None
    if args.files:
        if args.webhook or from_options:
            raise ValidationFailed("give either -f FILE or WEBHOOK with --name/--template/...")
        specs = [spec for path in args.files for spec in load_webhooks(path)]
        updated = []
        with connect(args) as client:
            for spec in specs:
                current = client.read_webhook_by_name(spec.name)
                updated.append(
                    client.update_webhook(
                        current["id"],
                        template=spec.template,
                        description=spec.description,
                        enabled=spec.enabled,
                    )
                )
        _print(updated, args.json, f"updated {len(updated)} webhook(s)")
        return 0
    if not args.webhook or not from_options:
        raise ValidationFailed("give WEBHOOK with --name, --template or --description, or -f FILE")
    with connect(args) as client:
        current = _resolve(client, args.webhook)
        changed = client.update_webhook(
            current["id"], name=args.name, template=template, description=args.description
        )
    _print_one(changed, args.json, "updated")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.list_webhooks()
    _print(rows, args.json, f"{len(rows)} webhook(s)")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    with connect(args) as client:
        webhook = _resolve(client, args.webhook)
    print(json.dumps(webhook, indent=None if args.json else 2, sort_keys=not args.json))
    return 0


def run_url(args: argparse.Namespace) -> int:
    """Print the URL alone: ``curl -d x=1 "$(marmot webhook url NAME)"``."""
    with connect(args) as client:
        webhook = _resolve(client, args.webhook)
    if not webhook["url"]:
        fail("the daemon serves no HTTP (http.port is 0), so its webhooks have no URL")
        return 1
    print(webhook["url"])
    return 0


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    with connect(args) as client:
        current = _resolve(client, args.webhook)
        changed = client.update_webhook(current["id"], enabled=enabled)
    _print_one(changed, args.json, "enabled" if enabled else "disabled")
    return 0


def run_enable(args: argparse.Namespace) -> int:
    return _set_enabled(args, True)


def run_disable(args: argparse.Namespace) -> int:
    return _set_enabled(args, False)


def run_rotate(args: argparse.Namespace) -> int:
    with connect(args) as client:
        current = _resolve(client, args.webhook)
        rotated = client.rotate_webhook(current["id"])
    _print_one(rotated, args.json, "rotated")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        current = _resolve(client, args.webhook)
        client.delete_webhook(current["id"])
    if args.json:
        json_lines([{"deleted": current["id"], "name": current["name"]}])
    else:
        print(f"deleted webhook {current['name']} ({current['id']})")
    return 0
