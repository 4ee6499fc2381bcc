"""Orchestrator objects as Prefect's templates see them: the API's JSON read back into
the Python values Prefect's models hold, so ``{{ flow_run.state.type }}`` prints
``StateType.COMPLETED``, times print as ``2026-12-06 13:44:29.123456+00:00``,
durations as ``0:00:00.045395`` and ids compare as UUIDs, as they do in Prefect.

Only the fields whose printed form differs from their JSON are listed; every other
field is passed through as the JSON has it. Values that do not parse are passed
through too: a template should not fail because a server sent a newer format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Union
from uuid import UUID

__all__ = [
    "DeploymentStatus",
    "ObjectSpec",
    "StateType",
    "WorkPoolStatus",
    "WorkQueueStatus",
    "object_spec",
    "prefect_value",
]


# (str, Enum), not StrEnum: Prefect's AutoEnum is a str Enum, which prints as
# ``StateType.COMPLETED``; a StrEnum would print ``COMPLETED``.
class StateType(str, Enum):  # noqa: UP042
    """Prefect's state types; a value prints as ``StateType.COMPLETED`` and equals
    ``"COMPLETED"``, as Prefect's enum does."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"


class WorkPoolStatus(str, Enum):  # noqa: UP042
    """A work pool's status, printed as Prefect's enum prints it."""

    READY = "READY"
    NOT_READY = "NOT_READY"
    PAUSED = "PAUSED"


class WorkQueueStatus(str, Enum):  # noqa: UP042
    """A work queue's status, printed as Prefect's enum prints it."""

    READY = "READY"
    NOT_READY = "NOT_READY"
    PAUSED = "PAUSED"


class DeploymentStatus(str, Enum):  # noqa: UP042
    """A deployment's status, printed as Prefect's enum prints it."""

    READY = "READY"
    NOT_READY = "NOT_READY"


def _datetime(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return value


_ISO_DURATION = re.compile(
    r"(?P<sign>-?)P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)


def _timedelta(value: Any) -> Any:
    # Prefect's API sends durations as seconds; pydantic's default is ISO 8601.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _ISO_DURATION.fullmatch(value.strip())
        if match is None or value.strip() in ("P", "-P", "PT", "-PT"):
            return value
        parts = {k: float(v) for k, v in match.groupdict().items() if v and k != "sign"}
        duration = timedelta(**parts)
        return -duration if match.group("sign") else duration
    return value


def _uuid(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return UUID(value)
    except ValueError:
        return value


def _enum(kind: type[Enum]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            return kind(value)
        except ValueError:
            return value

    return convert


Converter = Callable[[Any], Any]
ObjectSpec = Mapping[str, Union[Converter, "NestedSpec"]]
"""Per field: how its JSON value becomes Prefect's Python value, or a nested spec."""


class NestedSpec:
    """A field holding a model (``many``: a list of them), with its own fields' spec."""

    __slots__ = ("many", "name", "spec")

    def __init__(self, name: str, spec: ObjectSpec, *, many: bool = False) -> None:
        self.name = name
        self.spec = spec
        self.many = many


_STAMPS: dict[str, Converter] = {"id": _uuid, "created": _datetime, "updated": _datetime}

_STATE_DETAILS: ObjectSpec = {
    **{
        name: _uuid
        for name in (
            "flow_run_id",
            "task_run_id",
            "child_flow_run_id",
            "transition_id",
            "task_parameters_id",
            "deployment_concurrency_lease_id",
        )
    },
    **{name: _datetime for name in ("scheduled_time", "cache_expiration", "pause_timeout")},
}

_STATE: ObjectSpec = {
    "id": _uuid,
    "type": _enum(StateType),
    "timestamp": _datetime,
    "state_details": NestedSpec("state_details", _STATE_DETAILS),
}

_SPECS: dict[str, ObjectSpec] = {
    "flow-run": {
        **_STAMPS,
        **{
            name: _uuid
            for name in (
                "flow_id",
                "state_id",
                "deployment_id",
                "work_queue_id",
                "parent_task_run_id",
                "infrastructure_document_id",
                "work_pool_id",
                "created_by_id",
            )
        },
        **{
            name: _datetime
            for name in (
                "expected_start_time",
                "next_scheduled_start_time",
                "start_time",
                "end_time",
            )
        },
        **{
            name: _timedelta
            for name in ("total_run_time", "estimated_run_time", "estimated_start_time_delta")
        },
        "state_type": _enum(StateType),
        "state": NestedSpec("state", _STATE),
    },
    "flow": dict(_STAMPS),
    "deployment": {
        **_STAMPS,
        **{
            name: _uuid
            for name in (
                "flow_id",
                "work_queue_id",
                "storage_document_id",
                "infrastructure_document_id",
            )
        },
        "last_polled": _datetime,
        "status": _enum(DeploymentStatus),
        "schedules": NestedSpec("schedule", {**_STAMPS, "deployment_id": _uuid}, many=True),
    },
    "work-pool": {**_STAMPS, "default_queue_id": _uuid, "status": _enum(WorkPoolStatus)},
    "work-queue": {
        **_STAMPS,
        "work_pool_id": _uuid,
        "last_polled": _datetime,
        "status": _enum(WorkQueueStatus),
    },
}


def object_spec(kind: str) -> ObjectSpec:
    """The field spec of an orchestrator object kind (``flow-run``, ``work-pool``...);
    empty for a kind without one."""
    return _SPECS.get(kind, {})


def prefect_value(spec: ObjectSpec, field: str, value: Any) -> Any:
    """A field's JSON value as Prefect's model holds it; nested models come back as
    :class:`PrefectModel`, lists of them as lists."""
    convert = spec.get(field)
    if convert is None or value is None:
        return value
    if isinstance(convert, NestedSpec):
        if convert.many and isinstance(value, list):
            return [
                PrefectModel(convert.name, convert.spec, item) if isinstance(item, dict) else item
                for item in value
            ]
        if isinstance(value, dict):
            return PrefectModel(convert.name, convert.spec, value)
        return value
    return convert(value)


class PrefectModel(dict[str, Any]):
    """A nested model (a flow run's ``state``, say): reads typed as Prefect's do, and
    a state prints as Prefect's does (``Failed('message')``)."""

    __slots__ = ("_name", "_spec")

    def __init__(self, name: str, spec: ObjectSpec, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self._name = name
        self._spec = spec

    def __getitem__(self, key: str) -> Any:
        return prefect_value(self._spec, key, super().__getitem__(key))

    def __str__(self) -> str:
        if self._name != "state":
            return super().__str__()
        # Prefect's State.__str__: the name, then the message and the type when
        # the name does not already say it.
        shown: list[str] = []
        message = dict.get(self, "message")
        if message:
            shown.append(repr(message))
        kind = str(dict.get(self, "type") or "")
        name = dict.get(self, "name")
        if kind.lower() != (name or "").lower():
            shown.append(f"type={kind}")
        return f"{name}({', '.join(shown)})"
