"""Options every client command shares: where the daemon is and how to log in."""

from __future__ import annotations

import argparse
import socket
from urllib.parse import urlsplit

from marmot.engine.errors import DaemonUnavailable
from marmot.transport.client import Client

# How long the quick check waits for a TCP connection to the daemon's port.
PROBE_S = 1.0


def client_options() -> argparse.ArgumentParser:
    """A parent parser with ``--url``, ``--token`` and ``--timeout``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--url", help="daemon RPC URL (default $MARMOT_RPC_URL or tcp://127.0.0.1:7601)"
    )
    group.add_argument("--token", help="shared token (default $MARMOT_TOKEN)")
    group.add_argument(
        "--server-key",
        metavar="KEY",
        help="the daemon's CURVE public key, Z85 text or its .key file "
        "(default $MARMOT_SERVER_KEY; none: plain TCP)",
    )
    group.add_argument(
        "--client-key",
        metavar="FILE",
        help="this client's CURVE .key_secret file, for a daemon that lists its "
        "clients (default $MARMOT_CLIENT_KEY; none: a throwaway key)",
    )
    group.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    return parent


def connect(args: argparse.Namespace, *, probe: bool = True) -> Client:
    """A client for the daemon named by the command's options.

    Raises ``DaemonUnavailable`` at once, saying how to start one, when nothing
    listens at a ``tcp://`` URL (rather than after the whole time-out); ``probe``
    off skips that check (``status --wait`` waits for a daemon still to start).
    """
    client = Client(
        args.url,
        token=args.token,
        timeout_s=args.timeout,
        server_key=args.server_key,
        client_key=args.client_key,
    )
    refused = _refused(client.url) if probe else None
    if refused is not None:
        client.close()
        raise DaemonUnavailable(
            f"no Marmot daemon answers at {client.url} ({refused}). Start one with "
            "`marmot serve` (or `make run` in a checkout), or point --url / "
            "MARMOT_RPC_URL at a running one."
        )
    return client


def _refused(url: str) -> str | None:
    """Why nothing can listen at ``url`` (a connection refused), or None when a TCP
    connection opens, the URL is not TCP, or the answer is slow (then the call's own
    time-out decides)."""
    parts = urlsplit(url)
    if parts.scheme != "tcp" or parts.hostname in (None, "*") or parts.port is None:
        return None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=PROBE_S):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except OSError:
        return None
