"""Decoding and validating events at the edge, option by option (not a test).

    .venv/bin/python bench/validation.py [--replay-events N]

Prints the CPU time per event (best of 5 runs, ``time.process_time``) of
each way to turn a frame of 200 typical events (a flow-run state change:
3 labels, 2 related resources, a small nested payload) into ``Event``
objects, then ``decode_frame`` as the codec does it (the fast path with the
model as fallback; also on the smaller events bench/daemon.py sends), and
the rate of ``marmot replay`` on the speed scenario of shared/DESIGN.md
(100 automations, 10 % of events hit), with CPU per event.

The options:
  * msgpack / json + Event.model_validate: decode to dicts, then the model
    (the codec before the fast path);
  * Event.model_validate_json: pydantic-core validating straight from JSON;
  * pydantic-core lean schema: a typed-dict schema without the model, then
    the model's remaining checks in Python and ``trusted_event``;
  * orjson + lean schema: the same from orjson's dicts;
  * msgspec structs: decode into a struct (msgpack or JSON), the remaining
    checks in Python, ``trusted_event`` (what transport/event_decoder.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgpack
import msgspec
from pydantic_core import SchemaValidator
from pydantic_core import core_schema as cs

from marmot.engine.models.events import (
    RESOURCE_ID,
    RESOURCE_ROLE,
    Event,
    EventLimits,
    trusted_event,
)
from marmot.transport.codec import decode_frame, event_frame, events_frame

BATCH = 200
LIMITS = EventLimits(max_payload_bytes=262_144)
NOW = datetime.now(UTC)


def typical(k: int) -> dict[str, Any]:
    """A flow run's state change, as Prefect emits it (trimmed)."""
    return {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "prefect.flow-run.Completed",
        "resource": {
            "prefect.resource.id": f"prefect.flow-run.{uuid4()}",
            "prefect.resource.name": f"run-{k}",
            "prefect.state-type": "COMPLETED",
        },
        "related": [
            {
                "prefect.resource.id": f"prefect.flow.{uuid4()}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "etl",
            },
            {
                "prefect.resource.id": f"prefect.deployment.{uuid4()}",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": "etl/prod",
            },
        ],
        "payload": {"intended": {"from": "RUNNING", "to": "COMPLETED"}, "validated": True},
    }


def minimal(k: int) -> dict[str, Any]:
    """The event bench/daemon.py publishes: one label, no related resources, no payload."""
    return {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": f"bench.e{k % 100}",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{k % 97}"},
    }


def cpu_us_per_event(run: Callable[[], object], events: int, repeat: int = 20) -> float:
    """Best of 5: CPU microseconds per event of ``run`` (called ``repeat`` times)."""
    best = float("inf")
    for _ in range(5):
        began = time.process_time()
        for _ in range(repeat):
            run()
        best = min(best, (time.process_time() - began) / repeat / events * 1e6)
    return best


_LABELS = cs.dict_schema(cs.str_schema(), cs.str_schema())
_LEAN = SchemaValidator(
    cs.list_schema(
        cs.typed_dict_schema(
            {
                "id": cs.typed_dict_field(cs.uuid_schema(), required=False),
                "occurred": cs.typed_dict_field(cs.datetime_schema()),
                "event": cs.typed_dict_field(cs.str_schema(min_length=1, max_length=1024)),
                "resource": cs.typed_dict_field(_LABELS),
                "related": cs.typed_dict_field(cs.list_schema(_LABELS), required=False),
                "payload": cs.typed_dict_field(
                    cs.dict_schema(cs.str_schema(), cs.any_schema()), required=False
                ),
                "follows": cs.typed_dict_field(
                    cs.nullable_schema(cs.uuid_schema()), required=False
                ),
                "received": cs.typed_dict_field(
                    cs.nullable_schema(cs.datetime_schema()), required=False
                ),
            },
            extra_behavior="forbid",
        )
    )
)


def _from_lean(fields: dict[str, Any]) -> Event:
    """The model's checks the lean schema cannot say, then the event unvalidated."""
    resource = fields["resource"]
    related = fields.get("related", [])
    if not resource.get(RESOURCE_ID) or any(
        not r.get(RESOURCE_ID) or not r.get(RESOURCE_ROLE) for r in related
    ):
        raise ValueError("labels")
    return trusted_event(
        fields.get("id") or uuid4(),
        fields["occurred"].astimezone(UTC),
        fields["event"],
        resource,
        related,
        fields.get("payload", {}),
        fields.get("follows"),
        NOW,
    )


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    occurred: datetime
    event: str
    resource: dict[str, str]
    id: uuid.UUID = msgspec.field(default_factory=uuid4)
    related: list[dict[str, str]] = msgspec.field(default_factory=list)
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    follows: uuid.UUID | None = None
    received: datetime | None = None


_STRUCTS_MSGPACK = msgspec.msgpack.Decoder(list[_Wire])
_STRUCTS_JSON = msgspec.json.Decoder(list[_Wire])


def _from_struct(wire: _Wire) -> Event:
    """The model's checks a struct cannot say, then the event unvalidated."""
    if not wire.event or len(wire.event) > 1024 or not wire.resource.get(RESOURCE_ID):
        raise ValueError("event")
    if any(not r.get(RESOURCE_ID) or not r.get(RESOURCE_ROLE) for r in wire.related):
        raise ValueError("labels")
    return trusted_event(
        wire.id,
        wire.occurred.astimezone(UTC),
        wire.event,
        wire.resource,
        wire.related,
        wire.payload,
        wire.follows,
        NOW,
    )


def options() -> list[tuple[str, float]]:
    """Each option's CPU microseconds per event."""
    documents = [typical(k) for k in range(BATCH)]
    events = [Event.model_validate(d) for d in documents]
    as_msgpack = events_frame(events)
    as_json = json.dumps(documents).encode()
    each_json = [json.dumps(d).encode() for d in documents]
    each_msgpack = [event_frame(e) for e in events]
    bad = json.dumps([*documents[:-1], {**documents[-1], "resource": {}}]).encode()
    as_minimal = events_frame([Event.model_validate(minimal(k)) for k in range(BATCH)])
    context = {"received": NOW, "limits": LIMITS, "payload_bound": 10**9}

    def model(values: list[dict[str, Any]]) -> list[Event]:
        return [Event.model_validate(v, context=context) for v in values]

    rows: list[tuple[str, Callable[[], object]]] = [
        (
            "msgpack.unpackb + Event.model_validate",
            lambda: model(msgpack.unpackb(as_msgpack, timestamp=3, raw=False)),
        ),
        ("json.loads + Event.model_validate", lambda: model(json.loads(as_json))),
        (
            "Event.model_validate_json (pydantic-core from JSON)",
            lambda: [Event.model_validate_json(b, context=context) for b in each_json],
        ),
        (
            "pydantic-core lean schema from JSON + checks",
            lambda: [_from_lean(f) for f in _LEAN.validate_json(as_json)],
        ),
    ]
    try:
        import orjson

        rows.append(
            (
                "orjson + pydantic-core lean schema + checks",
                lambda: [_from_lean(f) for f in _LEAN.validate_python(orjson.loads(as_json))],
            )
        )
    except ImportError:
        pass
    rows += [
        ("msgspec, untyped (decode only)", lambda: msgspec.msgpack.decode(as_msgpack)),
        (
            "msgspec structs from msgpack + checks",
            lambda: [_from_struct(w) for w in _STRUCTS_MSGPACK.decode(as_msgpack)],
        ),
        (
            "msgspec structs from JSON + checks",
            lambda: [_from_struct(w) for w in _STRUCTS_JSON.decode(as_json)],
        ),
        (
            "decode_frame, msgpack batch (the codec as installed)",
            lambda: decode_frame(as_msgpack, limits=LIMITS, received=NOW),
        ),
        (
            "decode_frame, JSON batch (the codec as installed)",
            lambda: decode_frame(as_json, limits=LIMITS, received=NOW),
        ),
        (
            "decode_frame, msgpack batch of bench/daemon.py's events",
            lambda: decode_frame(as_minimal, limits=LIMITS, received=NOW),
        ),
        (
            "decode_frame, one event per msgpack frame",
            lambda: [decode_frame(f, limits=LIMITS, received=NOW) for f in each_msgpack],
        ),
        (
            "decode_frame, JSON batch with one bad event",
            lambda: decode_frame(bad, limits=LIMITS, received=NOW),
        ),
    ]
    return [(label, cpu_us_per_event(run, BATCH)) for label, run in rows]


def replay(events: int) -> tuple[float, float]:
    """``marmot replay`` on the speed scenario: (events/s wall, CPU us per event),
    in a child process with this one's ``PYTHONPATH``."""
    scenario_script = Path(__file__).resolve().parents[2] / "shared" / "bench" / "speed_scenario.py"
    with tempfile.TemporaryDirectory() as folder:
        scenario = Path(folder) / "speed.json"
        subprocess.run(
            [sys.executable, str(scenario_script), "100", str(events), "0.1", str(scenario)],
            check=True,
        )
        code = (
            "import sys; from marmot.cli import run; "
            f"sys.argv = ['marmot', 'replay', {str(scenario)!r}]; sys.exit(run())"
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, env=os.environ
        )
        elapsed = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return events / elapsed, cpu / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replay-events", type=int, default=100_000)
    args = parser.parse_args()
    print(f"decode + validate, batches of {BATCH} typical events (CPU per event):")
    for label, us in options():
        print(f"  {label:<60} {us:6.2f} us", flush=True)
    rate, cpu = replay(args.replay_events)
    print(
        f"marmot replay, 100 automations, 10% hits, {args.replay_events:,} events: "
        f"{rate:,.0f} events/s (CPU {cpu:.1f} us per event, process start included)",
        flush=True,
    )


if __name__ == "__main__":
    main()
