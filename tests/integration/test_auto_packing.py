"""``automations_per_actor: auto``: actors of their own while the node holds them,
then packed into shared actors, state and all; bulk creation; the layout after a
restart. Each test runs a daemon of its own (in a Ray namespace of its own) with
``max_automation_actors`` small, so a handful of automations outgrow it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import ray
import yaml

from marmot.engine.errors import Conflict, ValidationFailed
from marmot.transport.client import Client
from tests.integration.harness import DaemonThread, event_doc, make_config, reactive_doc, wait_for

pytestmark = pytest.mark.integration

TRIGGERED = "prefect.automation.triggered"


@contextlib.contextmanager
def _daemon(data_dir: Path, namespace: str, **overrides: Any) -> Iterator[DaemonThread]:
    config = make_config(data_dir, **{"ray.namespace": namespace, **overrides})
    running = DaemonThread(config).start()
    try:
        yield running
    finally:
        running.stop()


def _fired(client: Client, automation_id: Any) -> set[str]:
    triggered = client.filter_events(
        names=[TRIGGERED], resource_id=f"prefect.automation.{automation_id}", limit=1000
    )
    return {e["payload"]["triggering_labels"]["prefect.resource.id"] for e in triggered}


def _alive(namespace: str, name: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True


def _hosted(namespace: str, name: str) -> int:
    return int(ray.get(ray.get_actor(name, namespace=namespace).ping.remote(), timeout=30))


def test_auto_moves_automations_into_a_shared_actor_with_their_state(
    ray_session: None, tmp_path: Path
) -> None:
    namespace = f"marmot-test-{uuid4().hex[:8]}"
    with (
        _daemon(tmp_path, namespace, max_automation_actors=3) as daemon,
        Client(daemon.rpc_url, timeout_s=60) as client,
    ):
        # Three fit: each in an actor of its own. Each needs two events to fire.
        ids = [
            client.create_automation(reactive_doc(f"auto {k}", f"test.auto.{k}", threshold=2)).id
            for k in range(3)
        ]
        status = client.status()
        assert status["automation_actors"] == 3
        assert status["layout"]["packed"] is False
        assert all(_alive(namespace, f"automation-{i}") for i in ids)
        # Half way to firing, in their own actors.
        client.emit([event_doc(f"test.auto.{k}", resource="job.1") for k in range(3)])
        wait_for(lambda: client.explain(ids[2]).open_buckets == 1, what="the first events counted")

        # The fourth does not fit: the layout packs, and the three move in with it.
        ids.append(client.create_automation(reactive_doc("auto 3", "test.auto.3", 2)).id)
        assert client.status()["layout"]["packed"] is True
        wait_for(lambda: client.status()["automation_actors"] == 1, what="the automations to move")
        assert _hosted(namespace, "shard-0") == 4
        assert not any(_alive(namespace, f"automation-{i}") for i in ids[:3])

        # What they had counted moved with them: one more event each fires them.
        client.emit([event_doc(f"test.auto.{k}", resource="job.1") for k in range(4)])
        wait_for(
            lambda: all("job.1" in _fired(client, i) for i in ids[:3]),
            what="the moved automations to fire on their second event",
        )
        assert "job.1" not in _fired(client, ids[3])  # it has seen one event only
        for automation_id in ids[:3]:
            assert (
                len(
                    client.filter_events(
                        names=[TRIGGERED], resource_id=f"prefect.automation.{automation_id}"
                    )
                )
                == 1
            )  # fired once: not again by the move's replay

    # A restart lays the whole fleet out at once: packed from the start.
    namespace = f"marmot-test-{uuid4().hex[:8]}"
    with (
        _daemon(tmp_path, namespace, max_automation_actors=3) as daemon,
        Client(daemon.rpc_url, timeout_s=60) as client,
    ):
        status = client.status()
        assert status["layout"]["packed"] is True
        assert status["automation_actors"] == 1
        assert status["automations_loaded"] == 4
        assert _hosted(namespace, "shard-0") == 4
        client.emit([event_doc("test.auto.3", resource="job.1")])
        wait_for(lambda: "job.1" in _fired(client, ids[3]), what="auto 3 to fire after restart")


def test_create_many_is_all_or_none_and_lays_out_the_fleet_at_once(
    ray_session: None, tmp_path: Path
) -> None:
    namespace = f"marmot-test-{uuid4().hex[:8]}"
    with (
        _daemon(tmp_path, namespace, max_automation_actors=3) as daemon,
        Client(daemon.rpc_url, timeout_s=60) as client,
    ):
        documents = [reactive_doc(f"bulk {k}", f"test.bulk.{k}") for k in range(5)]
        created = client.create_automations(documents)
        assert [a.name for a in created] == [f"bulk {k}" for k in range(5)]
        status = client.status()
        # Five do not fit three actors: no actor of its own was made for any of them.
        assert status["layout"]["packed"] is True
        assert status["automation_actors"] == 1
        client.emit([event_doc(f"test.bulk.{k}", resource="job.2") for k in range(5)])
        wait_for(
            lambda: all("job.2" in _fired(client, a.id) for a in created), what="all five fire"
        )

        # A taken name: nothing is created.
        with pytest.raises(Conflict, match="bulk 4"):
            client.create_automations(
                [reactive_doc("bulk 5", "test.bulk.5"), reactive_doc("bulk 4", "x")]
            )
        # Given twice in one request: nothing is created either.
        with pytest.raises(Conflict, match="given twice"):
            client.create_automations([reactive_doc("twin", "x"), reactive_doc("twin", "y")])
        # Every invalid document is named by its place in the list.
        bad = reactive_doc("bad", "x")
        bad["trigger"]["within"] = "soon"
        with pytest.raises(ValidationFailed) as raised:
            client.create_automations([reactive_doc("good", "x"), bad])
        assert raised.value.details is not None
        assert raised.value.details[0]["loc"][:3] == ["automations", 1, "trigger"]
        names = {a.name for a in client.list_automations()}
        assert names == {f"bulk {k}" for k in range(5)}


def test_cli_creates_a_file_of_many_automations_in_shared_actors(
    ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from marmot.cli import main

    documents = [reactive_doc(f"file {k}", f"test.file.{k}") for k in range(150)]
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump({"automations": documents}))
    namespace = f"marmot-test-{uuid4().hex[:8]}"
    with (
        _daemon(tmp_path / "data", namespace, max_automation_actors=3) as daemon,
        Client(daemon.rpc_url, timeout_s=60) as client,
    ):
        # More than one lint request's worth (100) and one create request's.
        code = main(["automation", "create", "-f", str(path), "--json", "--url", daemon.rpc_url])
        out = capsys.readouterr().out
        assert code == 0
        assert len(out.splitlines()) == 150
        status = client.status()
        assert status["automations_loaded"] == 150
        assert status["automation_actors"] == 1
        client.emit([event_doc("test.file.149", resource="job.3")])
        created = client.read_automation_by_name("file 149")
        wait_for(lambda: "job.3" in _fired(client, created.id), what="the last one to fire")
