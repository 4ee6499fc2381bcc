"""ZeroMQ CURVE: encryption and key-based authentication for RPC and ingest.

The daemon holds a key pair (``marmot admin keys`` writes one as ZeroMQ
certificate files). Its RPC and ingest sockets become CURVE servers: every
connection is encrypted, and a client must know the daemon's public key.
With a folder of client public keys, only those clients get in (ZeroMQ's
ZAP handler checks each connection, and each client it refuses is counted in
``marmot_curve_rejections`` and logged at a limited rate with its address);
without one, any client that knows the daemon's public key does. Keys are
ZeroMQ's own: files written by ``zmq.auth.create_certificates`` (and czmq's
``zcert``) work unchanged.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.actors.throttle import LogThrottle
from marmot.engine.clock import Clock
from marmot.engine.errors import ValidationFailed

if TYPE_CHECKING:
    from marmot.actors.metrics import Metrics

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

log = logging.getLogger(__name__)

_Z85_KEY_LENGTH = 40
_UNKNOWN_CLIENT_KEY = "unknown_client_key"


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
    checking clients against the public keys in ``clients_dir`` (read here,
    once; any client, without one). A refused client is counted in
    ``metrics.curve_rejections`` and logged, at most once per 5 s with the
    number left out.
    """

    def __init__(
        self,
        secret_key_file: str | Path,
        clients_dir: str | Path | None = None,
        *,
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        _require_curve()
        self.keys = read_secret_keys(secret_key_file)
        self.clients_dir = Path(clients_dir) if clients_dir is not None else None
        self.clients: frozenset[bytes] | None = None
        if self.clients_dir is not None:
            if not self.clients_dir.is_dir():
                raise ValidationFailed(f"{self.clients_dir}: not a folder of client public keys")
            self.clients = frozenset(zmq.auth.load_certificates(str(self.clients_dir)))
        if metrics is None:
            # Here, not at the top: clients import this module and need no metrics.
            from marmot.actors.metrics import Metrics

            metrics = Metrics()
        self.metrics = metrics
        self._authenticators: dict[int, ThreadAuthenticator] = {}
        # One ZAP thread per context reports here.
        self._throttle = LogThrottle(5.0, clock)
        self._throttle_lock = threading.Lock()

    def start(self, context: zmq.Context[Any]) -> None:
        """Authenticate CURVE connections to ``context``'s sockets (idempotent)."""
        handle = int(context.underlying)
        if handle in self._authenticators:
            return
        # The handler runs blocking sockets in its own thread: give it a plain
        # context over the same underlying one (the daemon's may be asyncio's).
        shadow: zmq.Context[Any] = zmq.Context.shadow(handle)
        authenticator = _ZapHandler(shadow, self.clients, self._refused)
        authenticator.start()
        if self.clients is None:
            authenticator.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        else:
            authenticator.configure_curve_callback(domain="*", credentials_provider=authenticator)
        self._authenticators[handle] = authenticator

    def _refused(self, address: str, client_key: bytes) -> None:
        """Count and (at a limited rate) log a client refused for its key."""
        self.metrics.curve_rejections.labels(_UNKNOWN_CLIENT_KEY).inc()
        with self._throttle_lock:
            skipped = self._throttle.admit(_UNKNOWN_CLIENT_KEY)
        if skipped is None:
            return
        key = client_key.decode("ascii", "replace")
        more = f" ({skipped} more since the last report)" if skipped else ""
        log.warning(
            "CURVE: refused a client at %s: its public key %s is not in %s%s",
            address or "an unknown address",
            key,
            self.clients_dir,
            more,
            extra={"reason": _UNKNOWN_CLIENT_KEY, "peer": address, "client_key": key},
        )

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


class _ZapHandler(ThreadAuthenticator):
    """pyzmq's ZAP handler, checking CURVE clients against a set of public keys (its
    own credentials provider) and telling ``refused`` the address and key of each
    client it turns away. Requests are handled one at a time, in its thread."""

    def __init__(
        self,
        context: zmq.Context[Any],
        clients: frozenset[bytes] | None,
        refused: Callable[[str, bytes], None],
    ) -> None:
        super().__init__(context)
        self._clients = clients or frozenset()
        self._refused = refused
        self._address = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        """Answer one ZAP request (remembering the peer's address while it is checked)."""
        # ZAP 1.0: version, request id, domain, address, identity, mechanism, credentials.
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        try:
            await super().handle_zap_message(msg)
        finally:
            self._address = ""

    def callback(self, domain: str, client_key: bytes) -> bool:
        """Whether the client with this Z85 public key may connect."""
        if client_key in self._clients:
            return True
        self._refused(self._address, client_key)
        return False


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
