"""Packed automation actors and the SUB ingest, each against a daemon of its own.

These tests need configuration the session daemon does not have, so each starts
its own daemon on the shared session Ray. Every Marmot daemon names its actors
``timer``, ``executor-<n>``, ``shard-<n>``..., so each of these daemons gets a
Ray namespace of its own: it may run while the session daemon (namespace
``marmot``) is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import ray
import ray._private.state
import zmq

from marmot.engine.errors import AddressInUse
from marmot.engine.models.events import Event
from marmot.transport.client import Client
from marmot.transport.codec import events_frame
from marmot.transport.daemon import Daemon
from tests.integration.harness import DaemonThread, make_config, reactive_doc, wait_for

pytestmark = pytest.mark.integration

TRIGGERED = "prefect.automation.triggered"


@contextlib.contextmanager
def _own_daemon(data_dir: Path, **overrides: Any) -> Iterator[tuple[DaemonThread, str]]:
    """A daemon in a fresh Ray namespace; yields it with that namespace."""
    namespace = f"marmot-test-{uuid4().hex[:8]}"
    config = make_config(data_dir, **{"ray.namespace": namespace, **overrides})
    running = DaemonThread(config).start()
    try:
        yield running, namespace
    finally:
        running.stop()


def _event(name: str, resource: str, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource},
    }


_reactive = reactive_doc


def _fired_for(client: Client, automation_id: Any) -> set[str]:
    """The resource ids whose events made this automation fire so far."""
    triggered = client.filter_events(
        names=[TRIGGERED], resource_id=f"prefect.automation.{automation_id}", limit=1000
    )
    return {e["payload"]["triggering_labels"]["prefect.resource.id"] for e in triggered}


def _hosted(namespace: str, actor_name: str) -> int:
    """How many automations the named shard actor hosts (via its ``ping``)."""
    handle = ray.get_actor(actor_name, namespace=namespace)
    return int(ray.get(handle.ping.remote(), timeout=30))


def _actor_gone(namespace: str, actor_name: str) -> bool:
    try:
        ray.get_actor(actor_name, namespace=namespace)
    except ValueError:
        return True
    return False


# -- automations_per_actor ------------------------------------------------------------


def test_automations_per_actor_packs_automations_into_shard_actors(
    ray_session: None, tmp_path: Path
) -> None:
    with (
        _own_daemon(tmp_path, automations_per_actor=3) as (daemon, namespace),
        Client(daemon.rpc_url, timeout_s=30) as client,
    ):
        names = [f"test.pack.{k}" for k in range(5)]
        automations = [
            client.create_automation(_reactive(f"packed {k}", n)) for k, n in enumerate(names)
        ]
        ids = [a.id for a in automations]

        status = client.status()
        assert status["automations_loaded"] == 5
        assert status["automations_per_actor"] == 3
        assert status["automation_actors"] == 2
        # Created one after the other: the first three fill shard-0, the rest shard-1.
        assert _hosted(namespace, "shard-0") == 3
        assert _hosted(namespace, "shard-1") == 2

        def fire_round(label: str, which: Sequence[int], also_emit: Sequence[int] = ()) -> None:
            """Emit one event per automation in ``which`` (+ ``also_emit``), and wait
            until every automation in ``which`` has fired on it."""
            client.emit([_event(names[k], label) for k in [*also_emit, *which]])
            wait_for(
                lambda: all(label in _fired_for(client, ids[k]) for k in which),
                what=f"automations {which} to fire on {label}",
            )

        fire_round("round-1", [0, 1, 2, 3, 4])

        # Deleting both automations of shard-1 stops that actor; shard-0 is untouched.
        client.delete_automation(ids[3])
        assert client.status()["automation_actors"] == 2  # shard-1 still hosts one
        client.delete_automation(ids[4])
        status = client.status()
        assert status["automation_actors"] == 1
        assert status["automations_loaded"] == 3
        wait_for(lambda: _actor_gone(namespace, "shard-1"), what="shard-1 to be stopped")
        # The deleted automations' events are emitted first; nothing is interested in
        # them any more, so once the others have fired they can no longer fire.
        fire_round("round-2", [0, 1, 2], also_emit=[3, 4])
        assert "round-2" not in _fired_for(client, ids[3])
        assert "round-2" not in _fired_for(client, ids[4])

        # Pausing one automation unloads it from its shard; its shard-mates go on.
        assert client.pause_automation(ids[0]).enabled is False
        status = client.status()
        assert status["automation_actors"] == 1
        assert status["automations_loaded"] == 2
        assert _hosted(namespace, "shard-0") == 2
        # Its event is emitted with its shard-mates' events but routed nowhere.
        fire_round("round-3", [1, 2], also_emit=[0])
        assert "round-3" not in _fired_for(client, ids[0])
        assert client.explain(ids[0]).enabled is False

        # Resumed, it takes its slot in shard-0 again and fires.
        assert client.resume_automation(ids[0]).enabled is True
        assert _hosted(namespace, "shard-0") == 3
        assert client.status()["automation_actors"] == 1
        fire_round("round-4", [0, 1, 2])

        # shard-0 is full: a new automation starts a new shard (reusing the free name
        # shard-1); deleted and replaced at once, the name is reused straight away.
        names.append("test.pack.5")
        ids.append(client.create_automation(_reactive("packed 5", names[5])).id)
        assert client.status()["automation_actors"] == 2
        assert _hosted(namespace, "shard-1") == 1
        client.delete_automation(ids[5])
        names.append("test.pack.6")
        ids.append(client.create_automation(_reactive("packed 6", names[6])).id)
        assert client.status()["automation_actors"] == 2
        assert _hosted(namespace, "shard-1") == 1
        fire_round("round-5", [0, 1, 2, 6], also_emit=[5])
        assert "round-5" not in _fired_for(client, ids[5])


def test_a_crashed_shard_actor_comes_back_with_its_automations(
    ray_session: None, tmp_path: Path
) -> None:
    with (
        _own_daemon(tmp_path, automations_per_actor=2) as (daemon, namespace),
        Client(daemon.rpc_url, timeout_s=30) as client,
    ):
        names = ["test.crash.0", "test.crash.1"]
        ids = [client.create_automation(_reactive(f"crash {k}", n)).id for k, n in enumerate(names)]
        assert _hosted(namespace, "shard-0") == 2
        client.emit([_event(name, "before") for name in names])
        wait_for(lambda: all("before" in _fired_for(client, i) for i in ids), what="firings")

        shard = ray.get_actor("shard-0", namespace=namespace)
        actor_id = shard._actor_id.hex()
        ray.kill(shard, no_restart=False)  # a crash: Ray restarts the actor

        def restarted() -> bool:
            info = ray._private.state.actors(actor_id)
            return info["NumRestarts"] >= 1 and info["State"] == "ALIVE"

        wait_for(restarted, what="Ray to restart shard-0")
        client.emit([_event(name, "after") for name in names])
        wait_for(
            lambda: all("after" in _fired_for(client, i) for i in ids),
            timeout_s=10,
            what="the shard's automations to fire after its restart",
        )


# -- SUB ingest -----------------------------------------------------------------------


def test_sub_socket_receives_events_from_a_publisher(ray_session: None, tmp_path: Path) -> None:
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        url = f"tcp://127.0.0.1:{port}"
        with (
            _own_daemon(tmp_path, **{"ingest.sub_urls": [url]}) as (daemon, _),
            Client(daemon.rpc_url, timeout_s=30) as client,
        ):

            def publish(name: str, resource: str, *, topic: bytes | None = None) -> str:
                event_id = str(uuid4())
                frame = events_frame([Event.model_validate(_event(name, resource, event_id))])
                if topic is None:
                    pub.send(frame)
                else:
                    pub.send_multipart([topic, frame])
                return event_id

            def logged_ids(name: str) -> set[str]:
                return {e["id"] for e in client.filter_events(names=[name], limit=1000)}

            # PUB drops messages until the SUB's subscription has reached it: publish a
            # fresh probe on every poll until one of them is in the event log.
            probes: list[str] = []

            def a_probe_arrived() -> bool:
                probes.append(publish("test.sub.probe", "sub.probe"))
                return bool(logged_ids("test.sub.probe"))

            wait_for(a_probe_arrived, timeout_s=30, what="a published probe in the event log")
            assert logged_ids("test.sub.probe") <= set(probes)

            # An automation fires on an event that came in through the SUB socket.
            automation = client.create_automation(_reactive("fires on sub", "test.sub.fire"))
            fired_on = publish("test.sub.fire", "sub.fire")
            triggered = wait_for(
                lambda: client.filter_events(
                    names=[TRIGGERED],
                    resource_id=f"prefect.automation.{automation.id}",
                    limit=10,
                ),
                what="the automation to fire on a SUB-delivered event",
            )
            assert triggered[0]["payload"]["triggering_event"]["id"] == fired_on
            assert triggered[0]["payload"]["triggering_labels"] == {
                "prefect.resource.id": "sub.fire"
            }

            # A topic-prefixed multipart message: the event is the last frame part.
            topical = publish("test.sub.topic", "sub.topic", topic=b"topic")
            wait_for(
                lambda: topical in logged_ids("test.sub.topic"),
                what="the topic-prefixed event in the event log",
            )
    finally:
        pub.close(linger=0)


# -- a start that fails half way ------------------------------------------------------


def test_a_daemon_whose_ingest_cannot_bind_leaves_no_actors_behind(
    ray_session: None, tmp_path: Path
) -> None:
    namespace = f"marmot-test-{uuid4().hex[:8]}"
    blocker = zmq.Context.instance().socket(zmq.PULL)
    blocker.setsockopt(zmq.LINGER, 0)
    try:
        port = blocker.bind_to_random_port("tcp://127.0.0.1")
        config = make_config(
            tmp_path,
            **{"ray.namespace": namespace, "ingest.pull_url": f"tcp://127.0.0.1:{port}"},
        )
        daemon = Daemon(config)

        async def start_then_clean_up() -> list[str]:
            try:
                with pytest.raises(AddressInUse, match=f"ingest.pull_url tcp://127.0.0.1:{port}"):
                    async with daemon:
                        pass
                return [n for n in ("timer", "executor-0") if not _actor_gone(namespace, n)]
            finally:
                await daemon.stop()  # what a failed start should have done itself

        left_behind = asyncio.run(asyncio.wait_for(start_then_clean_up(), 120))
    finally:
        blocker.close(linger=0)
    assert left_behind == [], f"a failed start left these actors running: {left_behind}"


def test_a_daemon_whose_http_port_is_taken_fails_to_start_and_cleans_up(
    ray_session: None, tmp_path: Path
) -> None:
    namespace = f"marmot-test-{uuid4().hex[:8]}"
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        config = make_config(tmp_path, **{"ray.namespace": namespace, "http.port": port})
        daemon = Daemon(config)

        async def start_then_clean_up() -> list[str]:
            try:
                with pytest.raises(AddressInUse, match=f"http.port 127.0.0.1:{port} is in use"):
                    async with daemon:
                        pass
                return [n for n in ("timer", "executor-0") if not _actor_gone(namespace, n)]
            finally:
                await daemon.stop()

        left_behind = asyncio.run(asyncio.wait_for(start_then_clean_up(), 120))
    assert left_behind == [], f"a failed start left these actors running: {left_behind}"


def test_a_checkpoint_round_skips_the_actors_with_nothing_to_write(
    ray_session: None, tmp_path: Path
) -> None:
    """An idle actor is not woken to checkpoint nothing: only actors sent something,
    or whose safe sequence number moved, get the call."""
    # Periodic checkpoints far off: the test's own rounds are the only ones.
    with (
        _own_daemon(tmp_path, **{"data.checkpoint_interval_s": 3600}) as (daemon, _),
        Client(daemon.rpc_url, timeout_s=30) as client,
    ):
        ids = [str(client.create_automation(_reactive(f"c{k}", f"test.ck.{k}")).id) for k in (0, 1)]
        service = daemon.daemon.service
        assert service is not None
        placement = service.placement
        refs = {i: placement._actors[placement._actor_of[i]].ref for i in ids}
        calls: dict[str, int] = dict.fromkeys(ids, 0)
        for automation_id, ref in refs.items():
            part = ref.checkpoint_part

            def counted(upto: int, limit: int, _id: str = automation_id, _part: Any = part) -> Any:
                calls[_id] += 1
                return _part(upto, limit)

            ref.checkpoint_part = counted  # type: ignore[method-assign]

        def round_() -> dict[str, int]:
            # The checkpoint round alone, on the daemon's loop: `admin checkpoint`
            # also folds the WAL, which may answer "busy" while a reader is open.
            before = dict(calls)
            asyncio.run_coroutine_threadsafe(service.checkpoint(), daemon.loop).result(30)
            return {i: calls[i] - before[i] for i in ids}

        assert round_() == dict.fromkeys(ids, 1)  # loaded since: both write
        assert round_() == dict.fromkeys(ids, 0)  # nothing since: neither is called

        # An event for the first: logged (the safe sequence number moves for both)
        # and sent to the first. Both are called once; then neither again.
        client.emit([_event("test.ck.0", "r-1")])
        wait_for(
            lambda: client.filter_events(
                names=["prefect.automation.action.executed"],
                resource_id=f"prefect.automation.{ids[0]}",
                limit=1,
            ),
            what="c0's action (the last event its firing logs)",
        )
        assert round_() == dict.fromkeys(ids, 1)
        assert round_() == dict.fromkeys(ids, 0)
