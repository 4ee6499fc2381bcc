"""CURVE on real ZeroMQ sockets: encrypted, and only for clients that hold the keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from marmot.engine.errors import ValidationFailed
from marmot.transport.curve import (
    CurveServer,
    create_keys,
    read_keys,
    read_public_key,
    secure_client,
)

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    _OPEN.clear()
    ctx.destroy(linger=0)


def _pull(
    ctx: zmq.Context[zmq.Socket[bytes]], server: CurveServer
) -> tuple[zmq.Socket[bytes], str]:
    pull = ctx.socket(zmq.PULL)
    server.secure(pull)
    pull.bind("tcp://127.0.0.1:*")
    return pull, pull.getsockopt_string(zmq.LAST_ENDPOINT)


_OPEN: list[zmq.Socket[bytes]] = []  # kept open until the context goes


def _push(
    ctx: zmq.Context[zmq.Socket[bytes]], url: str, server_key: bytes | None, **client: object
) -> zmq.Socket[bytes]:
    push = ctx.socket(zmq.PUSH)
    _OPEN.append(push)
    push.setsockopt(zmq.LINGER, 0)
    if server_key is not None:
        secure_client(push, server_key, **client)  # type: ignore[arg-type]
    push.connect(url)
    return push


def _received(pull: zmq.Socket[bytes], timeout_ms: int) -> bytes | None:
    return pull.recv() if pull.poll(timeout_ms) else None


def test_keys_are_written_as_zeromq_certificates(tmp_path: Path) -> None:
    public, secret = create_keys(tmp_path, "daemon")
    assert (public.name, secret.name) == ("daemon.key", "daemon.key_secret")
    assert secret.stat().st_mode & 0o777 == 0o600
    pair = read_keys(secret)
    assert pair.secret is not None and read_keys(public).secret is None
    assert read_public_key(str(public)) == pair.public
    assert read_public_key(pair.public.decode()) == pair.public
    with pytest.raises(ValidationFailed, match="exists"):
        create_keys(tmp_path, "daemon")
    with pytest.raises(ValidationFailed, match="no secret-key"):
        CurveServer(public)
    with pytest.raises(ValidationFailed, match="not a Z85 public key"):
        read_public_key("#" * 40)


def test_any_client_with_the_server_key_gets_in_and_plaintext_does_not(
    tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    _, secret = create_keys(tmp_path, "daemon")
    server = CurveServer(secret)
    try:
        pull, url = _pull(context, server)
        _push(context, url, server.keys.public).send(b"sealed")
        assert _received(pull, 5000) == b"sealed"
        # A client that does not speak CURVE never gets a frame through.
        _push(context, url, None).send(b"plain")
        assert _received(pull, 300) is None
        # Nor does one that has the wrong server key.
        wrong, _ = zmq.curve_keypair()
        _push(context, url, wrong).send(b"wrong")
        assert _received(pull, 300) is None
    finally:
        server.stop()


def test_with_a_clients_folder_only_listed_clients_get_in(
    tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    _, secret = create_keys(tmp_path / "server", "daemon")
    allowed_public, allowed_secret = create_keys(tmp_path / "mine", "ops")
    (tmp_path / "clients").mkdir()
    allowed_public.rename(tmp_path / "clients" / "ops.key")
    _, stranger_secret = create_keys(tmp_path / "theirs", "stranger")
    server = CurveServer(secret, tmp_path / "clients")
    try:
        pull, url = _pull(context, server)
        _push(context, url, server.keys.public, client_keys=read_keys(stranger_secret)).send(
            b"stranger"
        )
        _push(context, url, server.keys.public).send(b"throwaway")
        _push(context, url, server.keys.public, client_keys=read_keys(allowed_secret)).send(b"ops")
        assert _received(pull, 5000) == b"ops"
        assert _received(pull, 300) is None
    finally:
        server.stop()


def test_a_missing_clients_folder_is_refused(tmp_path: Path) -> None:
    _, secret = create_keys(tmp_path, "daemon")
    with pytest.raises(ValidationFailed, match="not a folder"):
        CurveServer(secret, tmp_path / "nowhere")
