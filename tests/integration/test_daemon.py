"""The daemon end to end: real Ray, real ZeroMQ sockets, a real SQLite file."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import zmq

from marmot.engine.errors import NotFound, ValidationFailed
from marmot.transport.client import Client, Publisher
from tests.integration.harness import DaemonThread, event_doc, reactive_doc, wait_for

pytestmark = pytest.mark.integration


_event = event_doc


def _reactive(name: str, expect: str, threshold: int = 2) -> dict[str, Any]:
    return reactive_doc(name, expect, threshold)


def _events_named(client: Client, name: str) -> list[dict[str, Any]]:
    return client.filter_events(names=[name], limit=1000)


@pytest.fixture
def client(daemon: DaemonThread) -> Iterator[Client]:
    with Client(daemon.rpc_url, timeout_s=30) as c:
        yield c


def test_published_events_fire_an_automation_and_its_action_runs(
    daemon: DaemonThread, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="marmot.actors.dispatch")
    automation = client.create_automation(_reactive("two pings", "test.ping"))
    with Publisher(daemon.ingest_url, batch_size=10) as publisher:
        publisher.publish(_event("test.ping", "r.ping"))
        publisher.publish(_event("test.ping", "r.ping"))
    triggered = wait_for(
        lambda: [
            e
            for e in _events_named(client, "prefect.automation.triggered")
            if e["resource"]["prefect.resource.id"] == f"prefect.automation.{automation.id}"
        ],
        what="the automation to fire",
    )
    assert triggered[0]["payload"]["triggering_labels"] == {"prefect.resource.id": "r.ping"}
    executed = wait_for(
        lambda: [
            e
            for e in _events_named(client, "prefect.automation.action.executed")
            if e["resource"]["prefect.resource.id"] == f"prefect.automation.{automation.id}"
        ],
        what="the action to run",
    )
    assert executed[0]["payload"]["action_type"] == "do-nothing"
    # The daemon's log says so, naming the automation, its key and the event.
    fired = [r.getMessage() for r in caplog.records if r.getMessage().startswith("automation ")]
    cause = triggered[0]["payload"]["triggering_event"]
    assert fired == [
        f"automation 'two pings' fired for prefect.resource.id=r.ping on test.ping ({cause['id']})"
    ]


def test_emit_is_acknowledged_with_durable_sequence_numbers(client: Client) -> None:
    seqs = client.emit([_event("test.durable"), _event("test.durable")])
    assert len(seqs) == 2 and seqs[1] > seqs[0]
    logged = {e["seq"] for e in _events_named(client, "test.durable")}
    assert set(seqs) <= logged


def test_proactive_deadline_fires_on_time(daemon: DaemonThread, client: Client) -> None:
    automation = client.create_automation(
        {
            "name": "job must finish",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "after": ["test.job.started"],
                "expect": ["test.job.finished"],
                "for_each": ["prefect.resource.id"],
                "within": 10,
            },
            "actions": [{"type": "do-nothing"}],
        }
    )
    started = _event("test.job.started", "job.1")
    client.emit([started])
    fired = wait_for(
        lambda: [
            e
            for e in _events_named(client, "prefect.automation.triggered")
            if e["resource"]["prefect.resource.id"] == f"prefect.automation.{automation.id}"
        ],
        timeout_s=40,
        what="the proactive deadline",
    )
    deadline = datetime.fromisoformat(started["occurred"]) + timedelta(seconds=10)
    fired_at = datetime.fromisoformat(fired[0]["occurred"])
    assert timedelta(0) <= fired_at - deadline < timedelta(seconds=1)
    assert fired[0]["resource"]["prefect.posture"] == "Proactive"
    assert "late_by_seconds" not in fired[0]["payload"]  # on time: not marked late


def test_automations_are_created_updated_paused_and_deleted_live(
    daemon: DaemonThread, client: Client
) -> None:
    automation = client.create_automation(_reactive("lifecycle", "test.life", threshold=3))
    client.emit([_event("test.life", "r.life"), _event("test.life", "r.life")])
    wait_for(lambda: client.explain(automation.id).open_buckets == 1, what="a bucket")
    explained = client.explain(automation.id)
    assert explained.triggers[0].buckets[0].count == 2

    client.update_automation(automation.id, _reactive("lifecycle", "test.life", threshold=2))
    assert client.explain(automation.id).open_buckets == 0  # state resets on change

    paused = client.pause_automation(automation.id)
    assert paused.enabled is False
    client.emit([_event("test.life", "r.life"), _event("test.life", "r.life")])
    assert client.explain(automation.id).open_buckets == 0

    assert client.resume_automation(automation.id).enabled is True
    client.emit([_event("test.life", "r.life")])
    wait_for(lambda: client.explain(automation.id).open_buckets == 1, what="resumed evaluation")

    client.delete_automation(automation.id)
    with pytest.raises(NotFound):
        client.read_automation(automation.id)


def test_invalid_automation_gets_field_paths(client: Client) -> None:
    bad = _reactive("bad", "x")
    bad["trigger"]["posture"] = "Proactive"
    bad["trigger"]["within"] = 3
    with pytest.raises(ValidationFailed) as caught:
        client.create_automation(bad)
    assert "10 seconds" in caught.value.message
    assert caught.value.details


def test_malformed_frames_are_dropped_and_counted_while_good_events_flow(
    daemon: DaemonThread, client: Client
) -> None:
    automation = client.create_automation(_reactive("survives garbage", "test.good", threshold=1))
    context = zmq.Context.instance()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(daemon.ingest_url)
    push.send(b"\xc1 definitely not msgpack")
    push.send(json.dumps({"event": "missing everything"}).encode())
    push.close()
    with Publisher(daemon.ingest_url) as publisher:
        publisher.publish(_event("test.good", "r.good"))
    wait_for(
        lambda: [
            e
            for e in _events_named(client, "prefect.automation.triggered")
            if e["resource"]["prefect.resource.id"] == f"prefect.automation.{automation.id}"
        ],
        what="the good event to fire",
    )
    port = daemon.config.http.port
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    text = metrics.decode()
    assert 'marmot_events_dropped_total{reason="undecodable"} 1.0' in text
    assert 'marmot_events_dropped_total{reason="invalid_event"} 1.0' in text
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())
    assert health["ok"] is True


def test_status_reports_capacity(client: Client) -> None:
    status = client.status()
    assert status["capacity"]["actor_limit"] > 0
    # automations_per_actor: auto packs past the node's actors: only
    # max_automations (20,000) bounds how many more it takes.
    assert status["capacity"]["automations_free"] == 20_000 - status["automations_loaded"]
    assert status["layout"]["mode"] == "auto"
    assert status["automation_actors"] <= status["automations_loaded"]


def test_status_counts_events_by_where_they_came_from(client: Client) -> None:
    before = client.status()["events_by_source"]
    client.emit([_event("test.by-source", "r.by-source"), _event("test.by-source", "r.other")])
    after = client.status()["events_by_source"]
    assert after.get("rpc", 0) - before.get("rpc", 0) == 2
    assert after.get("ingest", 0) == before.get("ingest", 0)


def test_sdk_automation_lifecycle(daemon: DaemonThread, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from marmot import Automation, DoNothing, EventTrigger, Posture

    monkeypatch.setenv("MARMOT_RPC_URL", daemon.rpc_url)
    created = Automation(
        name="sdk woodchonk",
        trigger=EventTrigger(
            expect={"animal.walked"},
            match={"genus": "Marmota", "species": "monax"},
            posture=Posture.Reactive,
            threshold=3,
            within=10,
        ),
        actions=[DoNothing()],
    ).create()
    assert Automation.read(name="sdk woodchonk").id == created.id
    assert Automation.read(id=created.id).trigger.threshold == 3  # type: ignore[union-attr]
    assert created.pause().enabled is False
    assert created.resume().enabled is True
    created.trigger.threshold = 2  # type: ignore[union-attr]
    assert created.update().trigger.threshold == 2  # type: ignore[union-attr]

    async def async_side() -> None:
        again = await Automation.aread(id=created.id)
        assert again.name == "sdk woodchonk"
        assert await again.adelete() is True

    asyncio.run(async_side())
    with pytest.raises(NotFound):
        Automation.read(id=created.id)


def _thread_niceness(host: Any) -> list[int]:
    """The nice value of every thread of the actor's process."""
    import os

    return [os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")]


def test_evaluation_runs_at_the_daemons_priority_and_executors_below_it(
    daemon: DaemonThread, client: Client
) -> None:
    """Ray would run its workers' task threads at nice 15; the embedded Ray runs
    automation actors and the timer at the daemon's own nice value (0 unless the
    daemon was started under ``nice``, as some CI runners do), and executors at
    executors.nice or the daemon's, whichever is lower in priority."""
    import os

    import ray

    own = os.getpriority(os.PRIO_PROCESS, 0)

    client.create_automation(_reactive("niceness probe", "test.niceness"))
    service = daemon.daemon.service
    assert service is not None and service.dispatcher.executors and service.placement.refs()
    for executor in service.dispatcher.executors:
        niceness = ray.get(executor.handle.__ray_call__.remote(_thread_niceness), timeout=30)
        assert niceness and set(niceness) == {max(10, own)}  # executors.nice, by default
    assert service.timers.timer is not None
    evaluators = [ref.handle for ref in service.placement.refs()] + [service.timers.timer.handle]
    for actor in evaluators:
        niceness = ray.get(actor.__ray_call__.remote(_thread_niceness), timeout=30)
        assert niceness and set(niceness) == {own}


def test_an_automation_firing_on_its_own_events_is_paused(client: Client) -> None:
    import uuid

    automation_id = str(uuid.uuid4())
    looping = client.create_automation(
        {
            "id": automation_id,
            "name": "fires on itself",
            "trigger": {
                "type": "event",
                "expect": ["prefect.automation.*", "test.loop.start"],
                "match": {"prefect.resource.id": [f"prefect.automation.{automation_id}", "r.loop"]},
                "threshold": 1,
            },
            "actions": [{"type": "do-nothing"}],
        }
    )
    client.emit([_event("test.loop.start", "r.loop")])
    stopped = wait_for(
        lambda: [
            e
            for e in _events_named(client, "marmot.automation.loop-stopped")
            if e["resource"]["prefect.resource.id"] == f"prefect.automation.{automation_id}"
        ],
        what="the loop to be stopped",
        timeout_s=60,
    )
    assert "fires on its own events" in stopped[0]["payload"]["reason"]
    assert client.read_automation(looping.id).enabled is False
    fired = [
        e
        for e in _events_named(client, "prefect.automation.triggered")
        if e["resource"]["prefect.resource.id"] == f"prefect.automation.{automation_id}"
    ]
    assert 100 < len(fired) < 1000  # stopped soon after the limit, not thousands later
