"""A daemon on ZeroMQ CURVE: real Ray, real sockets, keys written by ``marmot admin keys``.

Only clients holding a key listed in ``curve.clients_dir`` get in, over RPC
and over ingest; a plain client or an unlisted one gets no answer at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

from marmot.cli import EXIT_OK, EXIT_UNREACHABLE, main
from marmot.engine.errors import DaemonUnavailable
from marmot.transport.client import Client, Publisher
from marmot.transport.curve import create_keys
from tests.integration.harness import DaemonThread, event_doc, make_config, reactive_doc, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE"),
]


@dataclass(frozen=True)
class Keys:
    server_public: Path
    client_secret: Path
    stranger_secret: Path


def _keys(folder: Path, name: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert main(["admin", "keys", "--dir", str(folder), "--name", name, "--json"]) == EXIT_OK
    written: dict[str, str] = json.loads(capsys.readouterr().out)
    return written


@pytest.fixture(scope="module")
def sealed(
    ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DaemonThread, Keys]]:
    root = tmp_path_factory.mktemp("curve")
    server_public, server_secret = create_keys(root / "daemon", "daemon")
    client_public, client_secret = create_keys(root / "ops", "ops")
    _, stranger_secret = create_keys(root / "stranger", "stranger")
    clients = root / "clients"
    clients.mkdir()
    client_public.rename(clients / "ops.key")
    config = make_config(
        root / "data",
        **{
            "ray.namespace": "marmot-curve",
            "curve.secret_key_file": str(server_secret),
            "curve.clients_dir": str(clients),
        },
    )
    running = DaemonThread(config).start()
    try:
        yield running, Keys(server_public, client_secret, stranger_secret)
    finally:
        running.stop()


def test_listed_clients_use_rpc_and_ingest(sealed: tuple[DaemonThread, Keys]) -> None:
    daemon, keys = sealed
    with Client(
        daemon.rpc_url,
        timeout_s=30,
        server_key=str(keys.server_public),
        client_key=str(keys.client_secret),
    ) as client:
        automation = client.create_automation(reactive_doc("sealed pings", "test.sealed"))
        with Publisher(
            daemon.ingest_url,
            batch_size=1,
            server_key=str(keys.server_public),
            client_key=str(keys.client_secret),
        ) as publisher:
            publisher.publish(event_doc("test.sealed", "r.sealed"))
        fired = wait_for(
            lambda: [
                e
                for e in client.filter_events(names=["prefect.automation.triggered"], limit=1000)
                if e["resource"]["prefect.resource.id"] == f"prefect.automation.{automation.id}"
            ],
            what="the automation to fire on an event sent over CURVE",
        )
        assert fired[0]["payload"]["triggering_labels"] == {"prefect.resource.id": "r.sealed"}


def test_plain_and_unlisted_clients_get_no_answer(sealed: tuple[DaemonThread, Keys]) -> None:
    daemon, keys = sealed
    with Client(daemon.rpc_url, timeout_s=1) as plain, pytest.raises(DaemonUnavailable):
        plain.health()
    with (
        Client(
            daemon.rpc_url,
            timeout_s=1,
            server_key=str(keys.server_public),
            client_key=str(keys.stranger_secret),
        ) as stranger,
        pytest.raises(DaemonUnavailable),
    ):
        stranger.health()
    # A throwaway key is not listed either.
    with (
        Client(daemon.rpc_url, timeout_s=1, server_key=str(keys.server_public)) as throwaway,
        pytest.raises(DaemonUnavailable),
    ):
        throwaway.health()


def test_the_cli_takes_the_keys_from_flags_and_the_environment(
    sealed: tuple[DaemonThread, Keys],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon, keys = sealed
    flags = ["--url", daemon.rpc_url, "--timeout", "10"]
    curve = ["--server-key", str(keys.server_public), "--client-key", str(keys.client_secret)]
    assert main(["status", *flags, *curve, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["state"] == "serving"
    assert main(["status", *flags[:2], "--timeout", "1"]) == EXIT_UNREACHABLE
    capsys.readouterr()
    monkeypatch.setenv("MARMOT_SERVER_KEY", str(keys.server_public))
    monkeypatch.setenv("MARMOT_CLIENT_KEY", str(keys.client_secret))
    assert main(["automation", "ls", *flags, "--json"]) == EXIT_OK


def test_admin_keys_writes_a_pair_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = _keys(tmp_path, "edge", capsys)
    assert Path(written["public_file"]).name == "edge.key"
    assert Path(written["secret_file"]).stat().st_mode & 0o777 == 0o600
    assert len(written["public_key"]) == 40
    assert main(["admin", "keys", "--dir", str(tmp_path), "--name", "edge"]) == 2
    assert "exists" in capsys.readouterr().err
