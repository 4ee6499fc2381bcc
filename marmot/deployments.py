"""Prefect ``prefect.yaml`` deployment triggers, loaded as Marmot automations.

Each spec under ``deployments[*].triggers`` becomes the automation that
``prefect deploy`` creates for it: the inline trigger, one ``run-deployment``
action aimed at the deployment, owned by ``prefect.deployment.<id>``.
Applying them replaces the automations each deployment owned, as
re-deploying does in Prefect. Only ``name``, ``entrypoint`` and ``triggers``
of a deployment are read; everything else in the file is Prefect's business.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from pydantic import ValidationError

from marmot.deployment_ids import DeploymentRef, DeploymentResolver
from marmot.documents import (
    DocumentError,
    drop_union_tags,
    field_path,
    node_line,
    read_documents,
)
from marmot.engine.errors import Conflict, NotFound, ValidationFailed
from marmot.engine.models.automations import Automation
from marmot.transport.client import Client

__all__ = [
    "AppliedTriggers",
    "DeploymentTriggers",
    "apply_deployment_triggers",
    "is_prefect_yaml",
    "load_deployment_triggers",
    "owner_resource",
]

logger = logging.getLogger(__name__)

# The fields a deployment trigger adds to its trigger: the automation's own ...
_AUTOMATION_FIELDS = ("name", "description", "enabled")
# ... and those of the run-deployment action it gets.
_ACTION_FIELDS = ("parameters", "job_variables", "schedule_after")
# Specs are validated before their deployment's id is looked up, so a bad file
# fails without a network round trip.
_UNRESOLVED = UUID(int=0)


def owner_resource(deployment_id: UUID) -> str:
    """The resource that owns a deployment's trigger automations: ``prefect.deployment.<id>``."""
    return f"prefect.deployment.{deployment_id}"


@dataclass(frozen=True)
class DeploymentTriggers:
    """One deployment of a ``prefect.yaml``: its id and the automations its triggers become.

    ``automations`` is empty when the file says ``triggers: []``: applying it
    removes the automations the deployment owned.
    """

    name: str
    entrypoint: str | None
    deployment_id: UUID
    automations: tuple[Automation, ...]

    @property
    def owner_resource(self) -> str:
        """``prefect.deployment.<id>``, the owner of these automations."""
        return owner_resource(self.deployment_id)


@dataclass(frozen=True)
class AppliedTriggers:
    """What applying one deployment's triggers did."""

    deployment: DeploymentTriggers
    deleted: tuple[UUID, ...]
    created: tuple[Automation, ...]


@dataclass(frozen=True)
class _Declared:
    """A deployment with ``triggers:`` as the file declares it, before its id is known."""

    ref: DeploymentRef
    specs: list[dict[str, Any]]
    loc: list[int | str]


def is_prefect_yaml(path: str | Path) -> bool:
    """True when the file is a ``prefect.yaml``: one mapping with a ``deployments``
    list and neither ``trigger`` nor ``automations`` (those are automation files)."""
    try:
        found = [data for data, _ in read_documents(Path(path)) if data is not None]
    except DocumentError:
        return False
    return len(found) == 1 and _has_deployments(found[0])


def _has_deployments(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("deployments"), list)
        and "trigger" not in data
        and "automations" not in data
    )


def load_deployment_triggers(
    path: str | Path,
    resolver: DeploymentResolver,
    *,
    deployments: Collection[str] = (),
) -> list[DeploymentTriggers]:
    """The deployments of a ``prefect.yaml`` that have ``triggers:``, with their
    automations, in file order.

    ``deployments`` limits loading to those names (as ``prefect deploy --name``
    does); deployments without ``triggers`` are skipped. Ids come from
    ``resolver``, asked once, after the whole file has validated. Raises
    ``DocumentError`` (file, line and field) for a bad file, a name not in it,
    or a file without triggers, and whatever the resolver raises.
    """
    file = Path(path)
    where = str(file)
    data, root = _read_one(file)
    declared = _declare(where, data, root, set(deployments))
    for item in declared:
        _automations(where, root, item, _UNRESOLVED)
    ids = resolver.resolve([item.ref for item in declared])
    loaded = [
        DeploymentTriggers(
            name=item.ref.name,
            entrypoint=item.ref.entrypoint,
            deployment_id=ids[item.ref],
            automations=tuple(_automations(where, root, item, ids[item.ref])),
        )
        for item in declared
    ]
    _check_unique_names(where, root, declared, loaded)
    return loaded


def _read_one(file: Path) -> tuple[Any, yaml.Node | None]:
    found = [(data, node) for data, node in read_documents(file) if data is not None]
    if len(found) != 1 or not _has_deployments(found[0][0]):
        raise DocumentError(
            str(file), None, "expected a prefect.yaml: one mapping with a `deployments:` list"
        )
    return found[0]


def _declare(
    where: str, data: dict[str, Any], root: yaml.Node | None, selected: set[str]
) -> list[_Declared]:
    declared: list[_Declared] = []
    names: list[str] = []
    for index, entry in enumerate(data["deployments"]):
        loc: list[int | str] = ["deployments", index]
        if not isinstance(entry, dict):
            raise _error(where, root, loc, "expected a deployment (a mapping)")
        name, entrypoint, triggers = (
            entry.get("name"),
            entry.get("entrypoint"),
            entry.get("triggers"),
        )
        if isinstance(name, str):
            names.append(name)
        if triggers is None or (selected and not (isinstance(name, str) and name in selected)):
            continue
        if not isinstance(name, str) or not name:
            raise _error(where, root, [*loc, "name"], "a deployment with triggers needs a name")
        if entrypoint is not None and not isinstance(entrypoint, str):
            raise _error(where, root, [*loc, "entrypoint"], "expected `path/to/flow.py:function`")
        if not isinstance(triggers, list):
            raise _error(where, root, [*loc, "triggers"], "expected a list of triggers")
        for position, spec in enumerate(triggers):
            if not isinstance(spec, dict):
                raise _error(where, root, [*loc, "triggers", position], "expected a mapping")
        declared.append(_Declared(DeploymentRef(name, entrypoint), triggers, loc))
    unknown = sorted(selected - set(names))
    if unknown:
        raise DocumentError(
            where,
            None,
            f"no deployment named {', '.join(map(repr, unknown))} in the file "
            f"(it has {', '.join(map(repr, names)) or 'none'})",
        )
    if not declared:
        which = "none of the selected deployments" if selected else "no deployment"
        raise DocumentError(where, None, f"no deployment triggers: {which} has `triggers:`")
    return declared


def _error(where: str, root: yaml.Node | None, loc: list[int | str], message: str) -> DocumentError:
    return DocumentError(where, node_line(root, loc), message, field_path(loc))


def _automations(
    where: str, root: yaml.Node | None, item: _Declared, deployment_id: UUID
) -> list[Automation]:
    from marmot.engine.templates.checks import validated_automation  # Jinja: see documents

    found: list[Automation] = []
    for position, spec in enumerate(item.specs):
        loc: list[int | str] = [*item.loc, "triggers", position]
        # Prefect numbers unnamed triggers from 1, by their place in the list.
        default_name = f"{item.ref.name}__automation_{position + 1}"
        document = _document(where, root, loc, spec, default_name, deployment_id)
        try:
            found.append(validated_automation(document))
        except ValidationError as exc:
            raise _from_validation(where, root, loc, exc) from exc
    return found


def _document(
    where: str,
    root: yaml.Node | None,
    loc: list[int | str],
    spec: dict[str, Any],
    default_name: str,
    deployment_id: UUID,
) -> dict[str, Any]:
    """The automation document ``prefect deploy`` makes of one trigger spec."""
    # A spec without `type` is told by its fields, as the trigger models do.
    trigger = {k: v for k, v in spec.items() if k not in (*_AUTOMATION_FIELDS, *_ACTION_FIELDS)}
    action: dict[str, Any] = {
        "type": "run-deployment",
        "source": "selected",
        "deployment_id": str(deployment_id),
        **{k: spec[k] for k in _ACTION_FIELDS if k in spec},
    }
    return {
        # An explicit empty or null name falls back as in Prefect's `as_automation`.
        "name": spec.get("name", default_name) or f"Automation for deployment {deployment_id}",
        **{k: spec[k] for k in ("description", "enabled") if k in spec},
        "trigger": trigger,
        "actions": [action],
        "owner_resource": owner_resource(deployment_id),
    }


def _from_validation(
    where: str, root: yaml.Node | None, loc: list[int | str], exc: ValidationError
) -> DocumentError:
    first = exc.errors(include_url=False)[0]
    inner = _spec_loc(first["loc"], first["type"])
    message = first["msg"]
    value = first.get("input")
    if (
        isinstance(value, str)
        and "{{" in value
        and inner[:1] not in (["parameters"], ["job_variables"])
    ):
        message += " (Marmot does not fill in prefect.yaml's {{ ... }} templates in trigger fields)"
    if exc.error_count() > 1:
        message += f" (and {exc.error_count() - 1} more problem(s))"
    error = _error(where, root, [*loc, *inner], message)
    error.details["errors"] = [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors(include_url=False)
    ]
    return error


def _spec_loc(loc: Sequence[int | str], kind: str) -> list[int | str]:
    """Where in the trigger spec an error of the automation built from it lies."""
    parts = drop_union_tags(loc)
    if not parts:
        return []
    head, *rest = parts
    if head == "trigger":
        return rest or (["type"] if kind == "invalid_trigger_type" else [])
    if head == "actions":
        return rest[1:]  # the spec's own parameters, job_variables, schedule_after
    return parts


def _check_unique_names(
    where: str,
    root: yaml.Node | None,
    declared: list[_Declared],
    loaded: list[DeploymentTriggers],
) -> None:
    # Marmot's automation names are unique (Prefect's are not), and unnamed
    # triggers of two flows' same-named deployments would get the same default.
    seen: dict[str, list[int | str]] = {}
    for item, deployment in zip(declared, loaded, strict=True):
        for position, automation in enumerate(deployment.automations):
            loc: list[int | str] = [*item.loc, "triggers", position]
            first = seen.get(automation.name)
            if first is None:
                seen[automation.name] = loc
                continue
            raise _error(
                where,
                root,
                [*loc, "name"],
                f"automation name {automation.name!r} is also used by {field_path(first)} "
                f"(line {node_line(root, first)}); Marmot needs unique names: "
                "give one of these triggers its own `name:`",
            )


def apply_deployment_triggers(
    client: Client, deployments: Sequence[DeploymentTriggers]
) -> list[AppliedTriggers]:
    """Replace each deployment's automations with its triggers' ones, as ``prefect deploy`` does:
    delete those owned by ``prefect.deployment.<id>``, then create the new ones.

    Every check runs before anything changes: raises ``ValidationFailed`` when
    two entries are the same deployment or give two triggers one name, and
    ``Conflict`` when a new name is taken by an automation the deployment does
    not own. Returns what was deleted and created, deployment by deployment.
    """
    by_id: dict[UUID, DeploymentTriggers] = {}
    for item in deployments:
        other = by_id.setdefault(item.deployment_id, item)
        if other is not item:
            raise ValidationFailed(
                f"deployments {other.name!r} and {item.name!r} are the same deployment "
                f"({item.deployment_id}); apply its triggers once"
            )
    names = Counter(a.name for item in deployments for a in item.automations)
    for name, count in names.items():
        if count > 1:
            raise ValidationFailed(
                f"automation name {name!r} is given to {count} deployment triggers; "
                "Marmot needs unique names: give the triggers their own `name:`"
            )
    existing = client.list_automations()
    owners = {item.owner_resource for item in deployments}
    kept = {row.name: row for row in existing if row.owner_resource not in owners}
    for item in deployments:
        for automation in item.automations:
            if automation.name in kept:
                raise Conflict(
                    f"automation name {automation.name!r} (a trigger of deployment "
                    f"{item.name!r}) is taken by automation {kept[automation.name].id}, "
                    "which that deployment does not own; rename the trigger (`name:`) or "
                    "delete that automation"
                )
    applied: list[AppliedTriggers] = []
    for item in deployments:
        owned = [row.id for row in existing if row.owner_resource == item.owner_resource]
        for automation_id in owned:
            try:
                client.delete_automation(automation_id)
            except NotFound:
                # Deleted meanwhile by someone else: the state we want.
                logger.info(
                    "owned automation already gone",
                    extra={"automation_id": str(automation_id), "owner": item.owner_resource},
                )
        created = tuple(client.create_automation(a) for a in item.automations)
        applied.append(AppliedTriggers(item, tuple(owned), created))
    return applied
