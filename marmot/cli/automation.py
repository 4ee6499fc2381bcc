"""``marmot automation ls|inspect|create|update|pause|resume|delete|explain|deploy-triggers``
(and ``test|history|why`` from ``marmot.cli.why``, ``lint`` from ``marmot.cli.lint``)."""

from __future__ import annotations

import argparse
import json
from typing import Any
from uuid import UUID

import yaml
from rich.markup import escape

from marmot.cli import deploy_triggers, lint, prefect_sync, why
from marmot.cli.connect import client_options, connect
from marmot.cli.output import json_lines, line, table
from marmot.deployments import (
    DeploymentTriggers,
    apply_deployment_triggers,
    is_prefect_yaml,
    load_deployment_triggers,
)
from marmot.documents import load_automations
from marmot.engine.errors import ValidationFailed
from marmot.engine.models.automations import Automation
from marmot.transport.client import Client


def register(commands: Any) -> None:
    """Add the ``automation`` command group."""
    group = commands.add_parser("automation", help="manage automations")
    sub = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    common = client_options()

    ls = sub.add_parser("ls", parents=[common], help="list automations")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_ls)

    for verb, text, handler in [
        ("inspect", "show one automation", run_inspect),
        ("pause", "stop evaluating an automation", run_pause),
        ("resume", "start evaluating an automation again", run_resume),
        ("delete", "delete an automation", run_delete),
        ("explain", "show an automation's live buckets", run_explain),
    ]:
        p = sub.add_parser(verb, parents=[common], help=text)
        p.add_argument("automation", help="automation id or name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)
        if verb == "inspect":
            p.add_argument("--yaml", action="store_true", help="YAML, as Prefect writes it")
        if verb == "explain":
            p.add_argument("--limit", type=int, default=100, help="buckets shown per trigger (100)")
            p.add_argument("--offset", type=int, default=0, help="buckets skipped per trigger")

    create = sub.add_parser(
        "create",
        parents=[common, deploy_triggers.prefect_options()],
        help="create automations from Prefect YAML/JSON files (a prefect.yaml's deployment "
        "triggers replace the automations their deployments owned)",
    )
    update = sub.add_parser(
        "update",
        parents=[common],
        help="update automations (matched by id, else by name) from files",
    )
    for p, handler in [(create, run_create), (update, run_update)]:
        p.add_argument(
            "-f",
            "--file",
            "--from-file",  # as `prefect automation create --from-file`
            dest="files",
            action="append",
            required=True,
            help="a YAML or JSON file (repeatable)",
        )
        p.add_argument("--json", action="store_true")
        p.add_argument(
            "--strict", action="store_true", help="lint findings are errors: write nothing"
        )
        p.set_defaults(handler=handler)

    deploy_triggers.register(sub, common)
    prefect_sync.register(sub, common)
    why.register(sub, common)
    lint.register(sub, common)


# Automations sent in one create request (the daemon takes at most 1,000).
CREATE_PART = 1000


def _resolve(client: Client, ref: str) -> Automation:
    try:
        return client.read_automation(UUID(ref))
    except ValueError:
        return client.read_automation_by_name(ref)


def _print(automations: list[Automation], as_json: bool, title: str) -> None:
    if as_json:
        json_lines(a.model_dump(mode="json") for a in automations)
        return
    table(
        title,
        ["id", "name", "enabled", "trigger", "actions"],
        (
            [a.id, a.name, a.enabled, a.trigger.type, ", ".join(x.type for x in a.actions)]
            for a in automations
        ),
    )


def run_ls(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.json:
            json_lines(r.model_dump(mode="json") for r in client.list_automations())
            return 0
        # One line each: a fleet's full documents would take seconds to send and read.
        rows = client.list_automation_summaries()
    table(
        f"{len(rows)} automation(s)",
        ["id", "name", "enabled", "trigger", "updated"],
        ([r.id, r.name, r.enabled, r.trigger, r.updated.isoformat()] for r in rows),
    )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    with connect(args) as client:
        automation = _resolve(client, args.automation)
    document = automation.model_dump(mode="json")
    if args.yaml:
        print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")
    else:
        print(json.dumps(document, indent=None if args.json else 2, sort_keys=not args.json))
    return 0


def run_create(args: argparse.Namespace) -> int:
    automations: list[Automation] = []
    deployments: list[DeploymentTriggers] = []
    for path in args.files:
        if is_prefect_yaml(path):
            resolver = deploy_triggers.resolver(args)
            deployments.extend(load_deployment_triggers(path, resolver))
        else:
            automations.extend(load_automations(path))
    created = []
    with connect(args) as client:
        lint.warn_before_write(client, args.files, args.strict)
        # In parts of CREATE_PART: each part is created all or none, laid out at once.
        for start in range(0, len(automations), CREATE_PART):
            created.extend(client.create_automations(automations[start : start + CREATE_PART]))
        applied = apply_deployment_triggers(client, deployments) if deployments else []
    created.extend(a for item in applied for a in item.created)
    replaced = sum(len(item.deleted) for item in applied)
    title = f"created {len(created)} automation(s)"
    if replaced:
        title += f" (replacing {replaced} owned by their deployments)"
    _print(created, args.json, title)
    return 0


def run_update(args: argparse.Namespace) -> int:
    for path in args.files:
        if is_prefect_yaml(path):
            raise ValidationFailed(
                f"{path} is a prefect.yaml: apply its deployment triggers with "
                "`marmot automation create -f` or `marmot automation deploy-triggers`"
            )
    documents = [a for path in args.files for a in load_automations(path)]
    updated = []
    with connect(args) as client:
        lint.warn_before_write(client, args.files, args.strict)
        for automation in documents:
            target = _find_existing(client, automation)
            updated.append(client.update_automation(target, automation))
    _print(updated, args.json, f"updated {len(updated)} automation(s)")
    return 0


def _find_existing(client: Client, automation: Automation) -> UUID:
    # A file may carry the id (exported from Marmot or Prefect) or just the name.
    from marmot.engine.errors import NotFound

    try:
        return client.read_automation(automation.id).id
    except NotFound:
        try:
            return client.read_automation_by_name(automation.name).id
        except NotFound:
            raise ValidationFailed(
                f"no automation with id {automation.id} or name {automation.name!r} to update"
            ) from None


def run_pause(args: argparse.Namespace) -> int:
    with connect(args) as client:
        automation = client.pause_automation(_resolve(client, args.automation).id)
    _print([automation], args.json, "paused")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    with connect(args) as client:
        automation = client.resume_automation(_resolve(client, args.automation).id)
    _print([automation], args.json, "resumed")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        automation = _resolve(client, args.automation)
        client.delete_automation(automation.id)
    if args.json:
        json_lines([{"deleted": str(automation.id), "name": automation.name}])
    else:
        print(f"deleted {automation.name} ({automation.id})")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    with connect(args) as client:
        automation = _resolve(client, args.automation)
        explained = client.explain(automation.id, limit=args.limit, offset=args.offset)
        last = client.filter_events(
            names=["prefect.automation.triggered"],
            resource_id=f"prefect.automation.{automation.id}",
            limit=1,
        )
    explanation = explained.model_dump(mode="json")
    if args.json:
        json_lines([explanation])
        return 0
    table(
        _explain_title(explanation),
        ["trigger", "kind", "labels", "window", "count", "last event / children"],
        explain_rows(explanation),
    )
    line(escape(_last_fired(last[0] if last else None)))
    return 0


def _last_fired(triggered: dict[str, Any] | None) -> str:
    """``last fired 2026-12-06T13:44:29Z for prefect.resource.id=r.1`` (from its
    automation.triggered event), or that the event log has no firing of it."""
    if triggered is None:
        return "never fired (as far back as the event log goes)"
    labels = triggered["payload"].get("triggering_labels") or {}
    key = ", ".join(f"{k}={v}" for k, v in labels.items())
    return f"last fired {triggered['occurred']}" + (f" for {key}" if key else "")


def _explain_title(explanation: dict[str, Any]) -> str:
    name = explanation["name"]
    if not explanation["enabled"]:
        return f"{name}: paused (a paused automation keeps no state)"
    deadline = explanation["next_deadline"] or "none until another event"
    shown = sum(len(t.get("buckets") or []) for t in explanation["triggers"])
    total = explanation["open_buckets"]
    page = f" ({shown} shown)" if shown < total else ""
    evicted = sum(t.get("evicted_buckets") or 0 for t in explanation["triggers"])
    capped = f", {evicted} evicted by limits.max_buckets_per_trigger" if evicted else ""
    return f"{name}: {total} open bucket(s){page}{capped}, next deadline {deadline}"


def _metric_row(path: str, metric: dict[str, Any]) -> list[Any]:
    # A metric trigger has no buckets: its state in the window column, its
    # value in the count column, its query in the last one.
    value = metric["value"]
    since = f" since {metric['since']}" if metric.get("since") else ""
    query = (
        f"{metric['name']} {metric['operator']} {metric['threshold']:g} over "
        f"{metric['range_s']:g} s, for {metric['firing_for_s']:g} s"
    )
    return [
        path,
        "Metric",
        "",
        f"{metric['state']}{since}",
        "no value" if value is None else f"{value:g} ({metric['samples']} run(s))",
        query,
    ]


def explain_rows(explanation: dict[str, Any]) -> list[list[Any]]:
    """The rows ``marmot automation explain`` prints for an explanation (as JSON)."""
    rows: list[list[Any]] = []
    for trigger in explanation["triggers"]:
        metric = trigger.get("metric")
        if metric:
            rows.append(_metric_row(trigger["path"], metric))
            continue
        buckets = trigger.get("buckets") or []
        held = trigger.get("held") or []
        if trigger["type"] in ("compound", "sequence"):
            children = trigger.get("recorded_children") or {}
            recorded = ", ".join(f"{path} at {at}" for path, at in children.items())
            rows.append(
                [trigger["path"], trigger["type"], "", "", "", recorded or "no child fired yet"]
            )
            continue
        if not buckets and not held:
            kind = trigger.get("posture") or trigger["type"]
            rows.append([trigger["path"], kind, "", "no open bucket", "", ""])
        for b in buckets:
            labels = ", ".join(f"{k}={v}" for k, v in b["labels"].items())
            rows.append(
                [
                    trigger["path"],
                    trigger.get("posture") or trigger["type"],
                    labels,
                    f"{b['start']} .. {b['end']}",
                    b["count"],
                    b["last_event_id"],
                ]
            )
        # SEMANTICS §3.4: expect events held per key for windows that open later.
        for h in held:
            labels = ", ".join(f"{k}={v}" for k, v in h["labels"].items())
            rows.append(
                [
                    trigger["path"],
                    "held",
                    labels,
                    f"{h['oldest']} .. {h['newest']}",
                    h["count"],
                    "",
                ]
            )
    return rows
