"""The fault tests' verdict: the daemon's firings and webhook deliveries against
``marmot replay`` over exactly the events its log holds.

Firings are compared by (automation, triggering labels, triggering event id,
fired at): ``fired_at`` is the triggering event's ``received`` stamp from the
log, so a firing that happened in another order or on lost bucket state shows
as one missing and one extra. Deliveries are compared by (automation,
triggering event id) from the templated webhook body.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

from marmot.actors.store.events import decode_body
from marmot.engine.triggers.firing import FIRING_NAMESPACE
from marmot.transport.client import Client
from tests.chaos.processes import MARMOT
from tests.chaos.workload import Delivery

TRIGGERED = "prefect.automation.triggered"

# (automation name, labels as sorted JSON, triggering event id, fired at)
FiringKey = tuple[str, str, str | None, datetime]
# (automation name, triggering event id)
DeliveryKey = tuple[str, str]


def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def read_log(db: Path) -> list[dict[str, Any]]:
    """Every event the log holds, in arrival (sequence) order, as stored."""
    with _ro(db) as conn:
        rows = conn.execute("SELECT body FROM events ORDER BY seq").fetchall()
    return [decode_body(body).model_dump(mode="json") for (body,) in rows]


def read_automations(db: Path) -> list[dict[str, Any]]:
    """Every stored automation document (with its id)."""
    with _ro(db) as conn:
        rows = conn.execute("SELECT document FROM automations ORDER BY name").fetchall()
    return [json.loads(doc) for (doc,) in rows]


def action_statuses(db: Path) -> Counter[str]:
    """How many actions the action log holds, by status."""
    with _ro(db) as conn:
        rows = conn.execute("SELECT status, count(*) FROM actions GROUP BY status").fetchall()
    return Counter({status: count for status, count in rows})


def action_status_by_firing(db: Path) -> dict[str, str]:
    """The action log's status of each firing's first action, by the id of the
    firing's ``prefect.automation.triggered`` event."""
    with _ro(db) as conn:
        rows = conn.execute(
            "SELECT firing_id, status FROM actions WHERE action_index = 0"
        ).fetchall()
    return {str(uuid5(FIRING_NAMESPACE, f"event|{firing}")): status for firing, status in rows}


def count_triggered(db: Path) -> int:
    with _ro(db) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM events WHERE event = ?", (TRIGGERED,)
        ).fetchone()
    return int(count)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)


def replay(
    workdir: Path, automations: list[dict[str, Any]], events: list[dict[str, Any]]
) -> list[FiringKey]:
    """``marmot replay --json`` over these automations and events."""
    automations_file = workdir / "automations.json"
    events_file = workdir / "events.jsonl"
    automations_file.write_text(json.dumps(automations))
    with events_file.open("w") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")
    done = subprocess.run(
        [
            str(MARMOT),
            "replay",
            "--automations",
            str(automations_file),
            "--events",
            str(events_file),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"marmot replay failed: {done.stderr}"
    keys = []
    for line in done.stdout.splitlines():
        if line.strip():
            row = json.loads(line)
            assert row["state"] == "Triggered", row
            keys.append(
                (row["automation"], _labels(row["labels"]), row["event_id"], _when(row["fired_at"]))
            )
    return keys


def daemon_firings(events: Iterable[dict[str, Any]]) -> list[FiringKey]:
    """The firings the daemon logged, from its ``prefect.automation.triggered`` events."""
    keys = []
    for event in events:
        if event["event"] != TRIGGERED:
            continue
        payload = event["payload"]
        source = payload["triggering_event"]
        keys.append(
            (
                event["resource"]["prefect.resource.name"],
                _labels(payload["triggering_labels"]),
                source["id"] if source else None,
                _when(event["occurred"]),
            )
        )
    return keys


@dataclass
class Verdict:
    """What was compared and what did not match."""

    events: int
    firings_expected: int
    firings_logged: int
    missing_firings: list[FiringKey] = field(default_factory=list)
    extra_firings: list[FiringKey] = field(default_factory=list)
    deliveries_expected: int = 0
    deliveries_received: int = 0
    lost_deliveries: list[DeliveryKey] = field(default_factory=list)
    # Acted on twice: delivered under more than one idempotency key (or none).
    duplicated_deliveries: list[DeliveryKey] = field(default_factory=list)
    unexpected_deliveries: list[DeliveryKey] = field(default_factory=list)
    # Sent again under the same idempotency key: an action whose executor died
    # mid-request is carried out again (at least once), and the receiver, by
    # the key, takes it once. Counted, not a mismatch.
    redelivered: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    # Why each lost delivery was lost: the action-log status of its firing's
    # action ("claimed": claimed, then its executor died; "unclaimed": the
    # firing never reached an executor; "no firing": the daemon never fired).
    lost_by_status: Counter[str] = field(default_factory=Counter)

    @property
    def firing_mismatches(self) -> int:
        return len(self.missing_firings) + len(self.extra_firings)

    @property
    def delivery_mismatches(self) -> int:
        return (
            len(self.lost_deliveries)
            + len(self.duplicated_deliveries)
            + len(self.unexpected_deliveries)
        )

    @property
    def mismatches(self) -> int:
        return self.firing_mismatches + self.delivery_mismatches

    def summary(self) -> str:
        return (
            f"events={self.events} firings_compared={self.firings_expected} "
            f"firings_logged={self.firings_logged} missing={len(self.missing_firings)} "
            f"extra={len(self.extra_firings)} deliveries_expected={self.deliveries_expected} "
            f"deliveries={self.deliveries_received} lost={len(self.lost_deliveries)} "
            f"duplicated={len(self.duplicated_deliveries)} "
            f"unexpected={len(self.unexpected_deliveries)} redelivered={self.redelivered} "
            f"mismatches={self.mismatches} "
            f"lost_by_action_status={dict(self.lost_by_status)} actions={dict(self.actions)}"
        )

    def details(self, limit: int = 5) -> str:
        parts = []
        for label, items in (
            ("missing firings", self.missing_firings),
            ("extra firings", self.extra_firings),
            ("lost deliveries", self.lost_deliveries),
            ("duplicated deliveries", self.duplicated_deliveries),
            ("unexpected deliveries", self.unexpected_deliveries),
        ):
            if items:
                parts.append(f"{label} (first {limit}): {list(items)[:limit]}")
        return "; ".join(parts)


def judge(
    db: Path,
    workdir: Path,
    deliveries: Sequence[Delivery],
    webhook_automations: set[str],
) -> Verdict:
    """Compare the daemon's log and the deliveries with ``marmot replay`` over the log."""
    events = read_log(db)
    expected = replay(workdir, read_automations(db), events)
    logged = daemon_firings(events)
    want, got = Counter(expected), Counter(logged)
    verdict = Verdict(
        events=sum(1 for e in events if e["event"].startswith("chaos.")),
        firings_expected=len(expected),
        firings_logged=len(logged),
        missing_firings=sorted((want - got).elements(), key=str),
        extra_firings=sorted((got - want).elements(), key=str),
    )
    wanted_deliveries = Counter((k[0], str(k[2])) for k in expected if k[0] in webhook_automations)
    # One delivery per action, as a receiver honouring Idempotency-Key sees them.
    keys_of: dict[DeliveryKey, set[str]] = {}
    for d in deliveries:
        keys_of.setdefault(d.key(), set()).add(d.idempotency_key)
    received = Counter({k: len(ids) for k, ids in keys_of.items()})
    verdict.redelivered = len(deliveries) - sum(received.values())
    verdict.deliveries_expected = sum(wanted_deliveries.values())
    verdict.deliveries_received = len(deliveries)
    verdict.lost_deliveries = sorted((wanted_deliveries - received).elements())
    verdict.duplicated_deliveries = sorted(
        k for k, ids in keys_of.items() if k in wanted_deliveries and (len(ids) > 1 or "" in ids)
    )
    verdict.unexpected_deliveries = sorted(k for k in received if k not in wanted_deliveries)
    verdict.actions = action_statuses(db)
    triggered_id = {
        (e["resource"]["prefect.resource.name"], e["payload"]["triggering_event"]["id"]): e["id"]
        for e in events
        if e["event"] == TRIGGERED and e["payload"]["triggering_event"]
    }
    status_of = action_status_by_firing(db)
    verdict.lost_by_status = Counter(
        status_of.get(triggered_id[key], "unclaimed") if key in triggered_id else "no firing"
        for key in verdict.lost_deliveries
    )
    return verdict


def settle(
    db: Path,
    expected_firings: int,
    deliveries: Callable[[], int],
    quiet_s: float = 2.0,
    timeout_s: float = 60.0,
) -> float:
    """Wait until the daemon has logged the expected firings and neither the action
    log nor the receiver has changed for ``quiet_s``; returns the seconds that
    took (``timeout_s`` if it never settled: the verdict then says what is off).
    Actions a dead executor claimed are adopted and finished by its successor,
    so settled also means none is left claimed."""
    began = time.monotonic()
    last: tuple[int, tuple[tuple[str, int], ...], int] | None = None
    changed = began
    while (now := time.monotonic()) - began < timeout_s:
        state = (
            count_triggered(db),
            tuple(sorted(action_statuses(db).items())),
            deliveries(),
        )
        if state != last:
            last, changed = state, now
        elif (
            state[0] >= expected_firings
            and "claimed" not in dict(state[1])
            and now - changed >= quiet_s
        ):
            return now - began
        time.sleep(0.1)
    return timeout_s


def checkpoint_seq(db: Path, automation_id: str) -> int | None:
    """The sequence number of the automation's checkpoint, if it has one."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT seq FROM checkpoints WHERE owner = ?", (automation_id,)
        ).fetchone()
    return None if row is None else int(row[0])


def triggered_events(client: Client, automation_id: UUID) -> list[dict[str, Any]]:
    """The automation's ``prefect.automation.triggered`` events in the log."""
    return client.filter_events(
        names=[TRIGGERED],
        resource_id=f"prefect.automation.{automation_id}",
        limit=100,
    )


def counted(client: Client, automation_id: UUID) -> int:
    """Events counted in the buckets of the automation's (first) trigger."""
    buckets = client.explain(automation_id).triggers[0].buckets
    return sum(b.count for b in buckets)
