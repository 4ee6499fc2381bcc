"""ZeroMQ CURVE: encryption and key-based authentication for RPC and ingest.

The daemon holds a key pair (``marmot admin keys`` writes one as ZeroMQ
certificate files). Its RPC and ingest sockets become CURVE servers: every
connection is encrypted, and a client must know the daemon's public key.
With a folder of client public keys, only those clients get in (ZeroMQ's
ZAP handler checks each connection); without one, any client that knows the
daemon's public key does. Keys are ZeroMQ's own: files written by
``zmq.auth.create_certificates`` (and czmq's ``zcert``) work unchanged.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from marmot.engine.errors import ValidationFailed

__all__ = [
    "ClientCurve",
    "client_curve",
    "CurveServer",
    "KeyPair",
    "create_keys",
    "read_keys",
    "read_public_key",
    "read_secret_keys",
    "secure_client",
]

_Z85_KEY_LENGTH = 40


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair as Z85 bytes; ``secret`` is None for a public certificate."""

    public: bytes
    secret: bytes | None = None


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise ValidationFailed("this libzmq is built without CURVE: encryption is not available")


def create_keys(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write a new key pair as ``NAME.key`` (public, to hand out) and
    ``NAME.key_secret`` (both keys, readable by the owner only) in ``folder``;
    returns the two paths. Refuses to overwrite existing files."""
    _require_curve()
    where = Path(folder)
    public, secret = where / f"{name}.key", where / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise ValidationFailed(f"{path} exists: remove it first or choose another name")
    where.mkdir(parents=True, exist_ok=True)
    made_public, made_secret = zmq.auth.create_certificates(str(where), name)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)


def read_keys(path: str | Path) -> KeyPair:
    """The keys in a certificate file; raises ``ValidationFailed`` naming the file."""
    file = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(str(file))
    except (OSError, ValueError) as exc:
        raise ValidationFailed(f"{file}: not a readable ZeroMQ certificate ({exc})") from exc
    if public is None or len(public) != _Z85_KEY_LENGTH:
        raise ValidationFailed(f"{file}: no public-key in the certificate")
    if secret is not None and len(secret) != _Z85_KEY_LENGTH:
        raise ValidationFailed(f"{file}: the secret-key is not a Z85 key")
    return KeyPair(public, secret)


def read_secret_keys(path: str | Path) -> KeyPair:
    """A key pair with its secret key (a ``.key_secret`` file), or ``ValidationFailed``."""
    keys = read_keys(path)
    if keys.secret is None:
        raise ValidationFailed(f"{path}: no secret-key (give the .key_secret file)")
    return keys


def read_public_key(value: str) -> bytes:
    """A public key given as 40 Z85 characters or as the path of a certificate file."""
    text = value.strip()
    if len(text) == _Z85_KEY_LENGTH and not Path(text).exists():
        try:
            zmq.utils.z85.decode(text)
        except (ValueError, KeyError, struct.error) as exc:
            raise ValidationFailed(f"not a Z85 public key: {text!r}") from exc
        return text.encode("ascii")
    return read_keys(text).public


class CurveServer:
    """The daemon's side: its key pair and who may connect.

    ``secure`` makes a socket a CURVE server; ``start`` installs ZeroMQ's ZAP
    handler on each context whose sockets are secured (once per context),
    checking clients against ``clients_dir`` (any client, without one).
    """

    def __init__(self, secret_key_file: str | Path, clients_dir: str | Path | None = None) -> None:
        _require_curve()
        self.keys = read_secret_keys(secret_key_file)
        self.clients_dir = Path(clients_dir) if clients_dir is not None else None
        if self.clients_dir is not None and not self.clients_dir.is_dir():
            raise ValidationFailed(f"{self.clients_dir}: not a folder of client public keys")
        self._authenticators: dict[int, ThreadAuthenticator] = {}

    def start(self, context: zmq.Context[Any]) -> None:
        """Authenticate CURVE connections to ``context``'s sockets (idempotent)."""
        handle = int(context.underlying)
        if handle in self._authenticators:
            return
        # The handler runs blocking sockets in its own thread: give it a plain
        # context over the same underlying one (the daemon's may be asyncio's).
        shadow: zmq.Context[Any] = zmq.Context.shadow(handle)
        authenticator = ThreadAuthenticator(shadow)
        authenticator.start()
        location = str(self.clients_dir) if self.clients_dir else zmq.auth.CURVE_ALLOW_ANY
        authenticator.configure_curve(domain="*", location=location)
        self._authenticators[handle] = authenticator

    def secure(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` (not yet bound) a CURVE server with the daemon's keys
        (starting the ZAP handler of its context, if needed)."""
        self.start(socket.context)
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public)
        assert self.keys.secret is not None
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret)

    def stop(self) -> None:
        """Stop the ZAP handlers."""
        for authenticator in self._authenticators.values():
            authenticator.stop()
        self._authenticators.clear()


@dataclass(frozen=True, slots=True)
class ClientCurve:
    """A client's CURVE settings: the daemon's public key and, optionally, the
    client's own key pair (one the daemon's ``clients_dir`` lists)."""

    server_key: bytes
    client_keys: KeyPair | None = None

    @classmethod
    def from_options(cls, server_key: str | None, client_key: str | None) -> ClientCurve | None:
        """From a server public key (Z85 text or a ``.key`` file) and a client
        ``.key_secret`` file; None without a server key (plain TCP)."""
        if not server_key:
            if client_key:
                raise ValidationFailed("a client key needs the daemon's public key too")
            return None
        keys = read_secret_keys(client_key) if client_key else None
        return cls(read_public_key(server_key), keys)

    def secure(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` (not yet connected) a CURVE client with these keys."""
        secure_client(socket, self.server_key, self.client_keys)


def secure_client(
    socket: zmq.Socket[Any], server_key: bytes, client_keys: KeyPair | None = None
) -> None:
    """Make ``socket`` (not yet connected) a CURVE client of the server whose
    public key is ``server_key``, with ``client_keys`` (a throwaway pair when
    None: enough for a daemon that admits any client)."""
    _require_curve()
    if client_keys is None or client_keys.secret is None:
        public, secret = zmq.curve_keypair()
    else:
        public, secret = client_keys.public, client_keys.secret
    socket.setsockopt(zmq.CURVE_SERVERKEY, server_key)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret)


def client_curve(server_key: str | None, client_key: str | None) -> ClientCurve | None:
    """CURVE settings from the arguments, else ``MARMOT_SERVER_KEY`` /
    ``MARMOT_CLIENT_KEY``; None (plain TCP) when no server key is given."""
    return ClientCurve.from_options(
        server_key if server_key is not None else os.environ.get("MARMOT_SERVER_KEY"),
        client_key if client_key is not None else os.environ.get("MARMOT_CLIENT_KEY"),
    )
