"""``marmot automation import --from-prefect`` and ``marmot automation export``.

Import reads every automation on a Prefect server and creates or updates it in
Marmot under the same id (running it again changes nothing); with
``--pause-source`` it then disables each imported one on the server, so their
actions do not run twice. Export writes Marmot's automations in Prefect's
schema, for ``prefect automation create --from-file`` (and back into Marmot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import yaml

from marmot.cli.connect import connect
from marmot.cli.output import json_lines, line, table
from marmot.engine.errors import DaemonUnavailable, NotFound, ValidationFailed
from marmot.engine.models.automations import Automation
from marmot.transport.client import Client

# The Prefect API client (httpx) is imported where it is used: every `marmot
# automation` verb builds its parser from this module.
if TYPE_CHECKING:
    from marmot.transport.prefect_api import PrefectAuth
    from marmot.transport.prefect_automations import ImportStep

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``import`` and ``export`` to the ``automation`` group."""
    imp = sub.add_parser(
        "import",
        parents=[common],
        help="import the automations of a Prefect server (same ids; idempotent)",
        description="Create or update, in Marmot, every automation on a Prefect server, "
        "keeping its id, name, trigger, actions and owner_resource (so deployment "
        "triggers come along). Prints what was created, updated, left unchanged and "
        "refused (with the reason and the field).",
    )
    imp.add_argument(
        "--from-prefect",
        action="store_true",
        required=True,
        help="read them from a Prefect server's API",
    )
    imp.add_argument(
        "--prefect-api-url",
        metavar="URL",
        help="the server's API (default $PREFECT_API_URL, then $MARMOT_PREFECT_API_URL)",
    )
    imp.add_argument(
        "--prefect-api-key",
        metavar="KEY",
        help="Prefect Cloud's API key (default $PREFECT_API_KEY); a self-hosted "
        "server's auth string is read from $PREFECT_API_AUTH_STRING",
    )
    imp.add_argument(
        "--name",
        dest="names",
        action="append",
        default=[],
        metavar="GLOB",
        help="only automations whose name matches (repeatable)",
    )
    imp.add_argument(
        "--pause-source",
        action="store_true",
        help="then disable each imported automation on the Prefect server",
    )
    imp.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
    imp.add_argument("--json", action="store_true", help="one JSON line per automation")
    imp.set_defaults(handler=run_import)

    exp = sub.add_parser(
        "export",
        parents=[common],
        help="write automations in Prefect's schema",
        description="Write automations (all, or those named) as Prefect's "
        "`prefect automation create --from-file` reads them.",
    )
    exp.add_argument("automations", nargs="*", metavar="NAME-OR-ID", help="default: all")
    exp.add_argument("-o", "--output", metavar="FILE", help="write here (default stdout)")
    exp.add_argument(
        "--format",
        choices=("yaml", "json"),
        help="default: from FILE's extension, else yaml",
    )
    exp.set_defaults(handler=run_export)


# -- import --------------------------------------------------------------------------


def _prefect_api(args: argparse.Namespace) -> tuple[str, PrefectAuth]:
    url = (
        args.prefect_api_url
        or os.environ.get("PREFECT_API_URL")
        or os.environ.get("MARMOT_PREFECT_API_URL")
    )
    if not url:
        raise ValidationFailed("name the Prefect server: --prefect-api-url URL or $PREFECT_API_URL")
    from marmot.transport.prefect_api import PrefectAuth

    auth = PrefectAuth(
        api_key=args.prefect_api_key or os.environ.get("PREFECT_API_KEY") or None,
        auth_string=os.environ.get("PREFECT_API_AUTH_STRING") or None,
    )
    return url.rstrip("/"), auth


def _read_source(url: str, auth: PrefectAuth) -> list[dict[str, Any]]:
    import httpx

    from marmot.transport.prefect_automations import read_prefect_automations

    async def read() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(headers=auth.headers(), timeout=30.0) as http:
            return await read_prefect_automations(http, url)

    try:
        return asyncio.run(read())
    except httpx.HTTPError as exc:
        raise DaemonUnavailable(
            f"could not read the automations of the Prefect server at {url}: {exc}"
        ) from None


def _pause_sources(url: str, auth: PrefectAuth, ids: list[str]) -> list[tuple[str, str]]:
    """Disable these automations on the server; returns those that failed, with why."""
    import httpx

    from marmot.transport.prefect_automations import pause_prefect_automation

    async def pause() -> list[tuple[str, str]]:
        failed: list[tuple[str, str]] = []
        async with httpx.AsyncClient(headers=auth.headers(), timeout=30.0) as http:
            for ident in ids:
                try:
                    await pause_prefect_automation(http, url, ident)
                except httpx.HTTPError as exc:
                    failed.append((ident, str(exc)))
        return failed

    return asyncio.run(pause())


def run_import(args: argparse.Namespace) -> int:
    """Import a Prefect server's automations; exits 1 if any was refused."""
    from marmot.transport.prefect_automations import ImportOutcome, plan_import, selected

    url, auth = _prefect_api(args)
    source = [d for d in _read_source(url, auth) if isinstance(d, dict)]
    with connect(args) as client:
        steps = plan_import(selected(source, args.names), client.list_automations())
        if not args.dry_run:
            for step in steps:
                _apply(client, step)
    enabled_sources = {str(d.get("id")) for d in source if d.get("enabled", True)}
    imported = [s.id for s in steps if s.outcome is not ImportOutcome.REFUSED]
    paused: list[str] = []
    if args.pause_source and not args.dry_run:
        to_pause = [i for i in imported if i in enabled_sources]
        failed = dict(_pause_sources(url, auth, to_pause))
        for ident, reason in failed.items():
            print(f"could not pause {ident} on the Prefect server: {reason}", file=sys.stderr)
        paused = [i for i in to_pause if i not in failed]
    _report(steps, args, paused)
    if not args.pause_source and not args.dry_run and any(i in enabled_sources for i in imported):
        print(
            "warning: the imported automations stay enabled on the Prefect server too, so "
            "both will act on the same events; pass --pause-source to disable them there",
            file=sys.stderr,
        )
    return 1 if any(s.outcome is ImportOutcome.REFUSED for s in steps) else 0


def _apply(client: Client, step: ImportStep) -> None:
    from marmot.transport.prefect_automations import ImportOutcome

    if step.automation is None or step.outcome is ImportOutcome.UNCHANGED:
        return
    if step.outcome is ImportOutcome.CREATED:
        client.create_automation(step.automation)
    else:
        client.update_automation(step.automation.id, step.automation)


def _report(steps: list[ImportStep], args: argparse.Namespace, paused: list[str]) -> None:
    from marmot.transport.prefect_automations import ImportOutcome

    if args.json:
        json_lines(
            {**s.to_json(), "dry_run": args.dry_run, "source_paused": s.id in paused} for s in steps
        )
        return
    rows = [
        [
            s.id,
            s.name,
            s.outcome.value + (" (dry run)" if args.dry_run else ""),
            f"{s.field}: {s.reason}" if s.outcome is ImportOutcome.REFUSED else "",
        ]
        for s in steps
    ]
    table("import from Prefect", ["id", "name", "outcome", "reason"], rows)
    counts = {o: sum(s.outcome is o for s in steps) for o in ImportOutcome}
    line(
        ", ".join(f"{n} {o.value}" for o, n in counts.items())
        + f"; {len(paused)} paused on Prefect"
    )


# -- export --------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    """Write automations in Prefect's schema."""
    from marmot.transport.prefect_automations import prefect_document

    with connect(args) as client:
        chosen: list[Automation] = (
            [_resolve(client, ref) for ref in args.automations]
            if args.automations
            else list(client.list_automations())
        )
    document = {"automations": [prefect_document(a) for a in chosen]}
    kind = args.format or _format_of(args.output)
    if kind == "json":
        text = json.dumps(document, indent=2) + "\n"
    else:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(chosen)} automation(s) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _format_of(path: str | None) -> str:
    return "json" if path is not None and path.lower().endswith(".json") else "yaml"


def _resolve(client: Client, ref: str) -> Automation:
    try:
        return client.read_automation(UUID(ref))
    except ValueError:
        pass
    except NotFound:
        pass
    return client.read_automation_by_name(ref)
