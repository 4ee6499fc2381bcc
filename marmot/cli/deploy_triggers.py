"""``marmot automation deploy-triggers``: a ``prefect.yaml``'s deployment triggers as automations.

It does what ``prefect deploy`` does with them: each deployment's triggers
replace the automations that deployment owned. The Prefect options here are
shared with ``automation create``, which takes a ``prefect.yaml`` too.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from marmot.cli.connect import connect
from marmot.cli.output import json_lines, table
from marmot.deployment_ids import PrefectDeploymentResolver
from marmot.deployments import AppliedTriggers, apply_deployment_triggers, load_deployment_triggers


def prefect_options() -> argparse.ArgumentParser:
    """A parent parser with ``--prefect-api-url``, ``--prefect-api-key`` and ``--deployment-id``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("Prefect deployments (prefect.yaml)")
    group.add_argument(
        "--prefect-api-url",
        metavar="URL",
        help="Prefect API to look deployment ids up in (default $PREFECT_API_URL)",
    )
    group.add_argument(
        "--prefect-api-key", metavar="KEY", help="its API key (default $PREFECT_API_KEY)"
    )
    group.add_argument(
        "--deployment-id",
        dest="deployment_ids",
        metavar="NAME=UUID",
        action="append",
        default=[],
        type=_name_and_id,
        help="the id of deployment NAME, used without asking the API (repeatable)",
    )
    return parent


def _name_and_id(text: str) -> tuple[str, UUID]:
    name, equals, value = text.rpartition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=UUID, got {text!r}")
    try:
        return name, UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID (in {text!r})") from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``automation deploy-triggers`` to the ``automation`` verbs."""
    p = sub.add_parser(
        "deploy-triggers",
        parents=[common, prefect_options()],
        help="create a prefect.yaml's deployment triggers, replacing the deployments' automations",
    )
    p.add_argument(
        "-f", "--file", default="prefect.yaml", help="the prefect.yaml (default ./prefect.yaml)"
    )
    p.add_argument(
        "--deployment",
        dest="deployments",
        metavar="NAME",
        action="append",
        default=[],
        help="only this deployment (repeatable), like `prefect deploy --name`",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_deploy_triggers)


def resolver(args: argparse.Namespace) -> PrefectDeploymentResolver:
    """The deployment-id resolver the command's Prefect options describe."""
    return PrefectDeploymentResolver(
        args.prefect_api_url,
        api_key=args.prefect_api_key,
        ids=dict(args.deployment_ids),
        timeout_s=args.timeout,
    )


def run_deploy_triggers(args: argparse.Namespace) -> int:
    loaded = load_deployment_triggers(args.file, resolver(args), deployments=args.deployments)
    with connect(args) as client:
        applied = apply_deployment_triggers(client, loaded)
    print_applied(applied, args.json)
    return 0


def print_applied(applied: Sequence[AppliedTriggers], as_json: bool) -> None:
    """One JSON line per deployment, or a table of the automations created."""
    if as_json:
        json_lines(
            {
                "deployment": a.deployment.name,
                "entrypoint": a.deployment.entrypoint,
                "deployment_id": str(a.deployment.deployment_id),
                "owner_resource": a.deployment.owner_resource,
                "deleted": [str(i) for i in a.deleted],
                "created": [c.model_dump(mode="json") for c in a.created],
            }
            for a in applied
        )
        return
    rows: list[list[Any]] = []
    for a in applied:
        head = [a.deployment.name, a.deployment.deployment_id]
        if not a.created:
            rows.append([*head, "(no triggers)", "", "", ""])
        for c in a.created:
            rows.append([*head, c.name, c.id, c.enabled, c.trigger.type])
    created = sum(len(a.created) for a in applied)
    deleted = sum(len(a.deleted) for a in applied)
    table(
        f"{len(applied)} deployment(s): created {created} automation(s), "
        f"deleted {deleted} they owned before",
        ["deployment", "deployment id", "automation", "id", "enabled", "trigger"],
        rows,
    )
