"""The daemon's listening addresses: binding them, and a taken one named by its key.

An address another process holds fails the start with ``AddressInUse`` naming
the configuration key that sets it and the address (``rpc.url
tcp://127.0.0.1:7601 is in use``; the CLI adds its flag and variable).
``check_free`` finds a taken ingest port at once, although the ingest socket
is bound only once the automations are recovered.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator

import uvicorn

from marmot.engine.errors import AddressInUse

__all__ = ["QuietServer", "address_in_use", "bind_tcp", "check_free", "is_in_use"]


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def address_in_use(key: str, address: str) -> AddressInUse:
    """The error of ``address``, set by the configuration key ``key``, being taken."""
    return AddressInUse(f"{key} {address} is in use", details={"key": key, "address": address})


def is_in_use(exc: BaseException) -> bool:
    """Whether a failed bind (``OSError``, ``zmq.ZMQError``) found the address taken."""
    return getattr(exc, "errno", None) == errno.EADDRINUSE


def bind_tcp(host: str, port: int, key: str = "http.port") -> socket.socket:
    """A TCP socket bound to ``host:port``; raises ``AddressInUse`` (naming ``key``)
    when it is taken, ``OSError`` naming the address for any other failure."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if is_in_use(exc):
            raise address_in_use(key, f"{host}:{port}") from None
        raise OSError(exc.errno, f"cannot serve HTTP on {host}:{port}: {exc.strerror}") from exc
    return sock


def check_free(key: str, url: str) -> None:
    """Raise ``AddressInUse`` if a process listens on the ZeroMQ ``url`` now.

    Only ``tcp://HOST:PORT`` with a numeric port is checked (a ``*`` port is
    always free; an interface name or an ``ipc://`` path is left to ZeroMQ's
    bind). The probe binds as ZeroMQ does (``SO_REUSEADDR``), so a port left
    in TIME_WAIT by the last run does not count as taken.
    """
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or not port.isdigit():
        return
    host = host.strip("[]")
    try:
        found = socket.getaddrinfo(
            None if host == "*" else host,
            int(port),
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except OSError:
        return
    family, kind, proto, _, address = found[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if is_in_use(exc):
                raise address_in_use(key, url) from None
