"""Who may publish: ingest beyond loopback needs CURVE client keys (rpc.token does not
guard it), and the daemon's ZAP handler logs and counts every client it refuses.
Real ZeroMQ sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
import zmq

from marmot.actors.metrics import Metrics
from marmot.cli import main
from marmot.config import IngestConfig, load_config
from marmot.engine.clock import ManualClock
from marmot.engine.errors import ValidationFailed
from marmot.engine.models.events import Event, EventLimits
from marmot.transport.codec import events_frame
from marmot.transport.curve import CurveServer, create_keys, read_keys, secure_client
from marmot.transport.ingest import Ingest

KEYS = {
    "MARMOT_CURVE_SECRET_KEY_FILE": "keys/daemon.key_secret",
    "MARMOT_CURVE_CLIENTS_DIR": "clients",
}


@pytest.mark.parametrize(
    "url", ["tcp://0.0.0.0:7600", "tcp://*:7600", "tcp://192.168.1.20:7600", "tcp://eth0:7600"]
)
def test_ingest_beyond_loopback_is_refused_even_with_a_token(url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_config(env={"MARMOT_RPC_TOKEN": "s3cret", "MARMOT_INGEST_PULL_URL": url})
    message = str(caught.value)
    assert "environment variable MARMOT_INGEST_PULL_URL: ingest.pull_url:" in message
    assert "refusing to bind ingest" in message and "without CURVE client keys" in message
    assert "curve.secret_key_file and curve.clients_dir" in message


def test_ingest_beyond_loopback_needs_the_clients_folder_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"MARMOT_INGEST_PULL_URL": "tcp://0.0.0.0:7600", "MARMOT_RPC_TOKEN": "s3cret"}
    # Encrypted, but anyone who has the daemon's public key could publish.
    with pytest.raises(ValidationFailed, match="without CURVE client keys"):
        load_config(
            env={**env, "MARMOT_CURVE_SECRET_KEY_FILE": KEYS["MARMOT_CURVE_SECRET_KEY_FILE"]}
        )
    config = load_config(env={**env, **KEYS})
    assert config.ingest.pull_url == "tcp://0.0.0.0:7600"
    # CURVE client keys admit both sockets beyond loopback, with no token at all.
    both = {"MARMOT_INGEST_PULL_URL": "tcp://*:7600", "MARMOT_RPC_URL": "tcp://*:7601"}
    assert load_config(env={**both, **KEYS}).rpc.token is None


def test_rpc_beyond_loopback_still_takes_a_token_alone() -> None:
    config = load_config(env={"MARMOT_RPC_URL": "tcp://0.0.0.0:7601", "MARMOT_RPC_TOKEN": "s"})
    assert config.rpc.url == "tcp://0.0.0.0:7601"


def test_serve_refuses_an_unguarded_ingest_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MARMOT_RPC_TOKEN", "s3cret")
    monkeypatch.setenv("MARMOT_INGEST_PULL_URL", "tcp://0.0.0.0:7600")
    monkeypatch.delenv("MARMOT_CONFIG", raising=False)
    assert main(["serve"]) == 2  # refused before anything is opened
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "refusing to bind ingest to 0.0.0.0 without CURVE client keys" in err


def _event_frame(name: str) -> bytes:
    event = Event.model_validate(
        {
            "id": str(uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": name,
            "resource": {"prefect.resource.id": "test.resource"},
        }
    )
    return events_frame([event])


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_only_listed_publishers_reach_ingest_and_refusals_are_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, daemon_secret = create_keys(tmp_path / "keys", "daemon")
    listed_public, listed_secret = create_keys(tmp_path / "mine", "ops")
    (tmp_path / "clients").mkdir()
    listed_public.rename(tmp_path / "clients" / "ops.key")
    _, stranger_secret = create_keys(tmp_path / "theirs", "stranger")
    metrics = Metrics()
    # A clock that stands still: every refusal falls in the first log interval.
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    curve = CurveServer(daemon_secret, tmp_path / "clients", metrics=metrics, clock=clock)

    def rejections() -> float:
        value = metrics.registry.get_sample_value(
            "marmot_curve_rejections_total", {"reason": "unknown_client_key"}
        )
        return value or 0.0

    async def main() -> list[str]:
        got: list[str] = []

        async def submit(events: Sequence[Event]) -> None:
            got.extend(e.event for e in events)

        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        ingest = Ingest(
            IngestConfig(pull_url="tcp://127.0.0.1:*"),
            EventLimits(),
            submit,
            metrics,
            context=context,
            curve=curve,
        )
        ingest.start()
        task = asyncio.get_running_loop().create_task(ingest.run())
        pushes = []
        try:
            for name, is_curve, keys in (
                ("plain", False, None),
                ("stranger", True, read_keys(stranger_secret)),
                ("throwaway", True, None),  # a key pair made up on the spot
                ("listed", True, read_keys(listed_secret)),
            ):
                push = context.socket(zmq.PUSH)
                push.setsockopt(zmq.LINGER, 0)
                if is_curve:
                    secure_client(push, curve.keys.public, keys)
                push.connect(ingest.bound_endpoint)
                push.send(_event_frame(f"test.{name}"), zmq.NOBLOCK)
                pushes.append(push)
            deadline = asyncio.get_running_loop().time() + 30
            while not (got and rejections() >= 2):
                assert asyncio.get_running_loop().time() < deadline, (got, rejections())
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # a plain or refused frame would be in by now
            await ingest.flush()
            return got
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for push in pushes:
                push.close(linger=0)
            ingest.close()
            curve.stop()
            context.destroy(linger=0)

    with caplog.at_level(logging.WARNING, logger="marmot.transport.curve"):
        got = asyncio.run(main())
    assert got == ["test.listed"]
    # The stranger and the throwaway key, each again as it reconnects; a plain
    # client fails its handshake before ZAP is asked.
    assert rejections() >= 2
    lines = [r for r in caplog.records if r.name == "marmot.transport.curve"]
    # Counted every time, logged once per interval, with the peer's address.
    assert len(lines) == 1
    assert lines[0].getMessage().startswith("CURVE: refused a client at 127.0.0.1: its public key")
    assert lines[0].__dict__["peer"] == "127.0.0.1"
